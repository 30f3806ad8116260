package actors

import "testing"

// TestShardGoldenVectors pins the shard function forever: the values were
// computed with an independent crc32 (Python's zlib.crc32); "123456789" is
// the standard CRC-32 check value 0xcbf43926. HAProxy's crc32,mod(256) is
// checked against the same function in the cluster tests.
func TestShardGoldenVectors(t *testing.T) {
	for _, v := range []struct {
		name  string
		shard Shard
	}{
		{"", 0}, {"a", 67}, {"alice", 71}, {"bob", 64}, {"u-0001", 156},
		{"user.name_with-dots", 250}, {"x", 131}, {"lg0", 154}, {"lg999", 70}, {"123456789", 38},
	} {
		if got := ShardOf(v.name); got != v.shard {
			t.Errorf("ShardOf(%q) = %d, want %d", v.name, got, v.shard)
		}
		if got := ShardOfBytes([]byte(v.name)); got != v.shard {
			t.Errorf("ShardOfBytes(%q) = %d, want %d", v.name, got, v.shard)
		}
	}
}
