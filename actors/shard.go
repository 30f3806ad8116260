package actors

import "hash/crc32"

// ShardCount is the number of virtual shards users are spread over, fixed
// for the life of the data: changing it is a data migration. Nodes own
// shards, not users.
const ShardCount = 256

// Shard is a user's shard, 0 … ShardCount−1.
type Shard uint8

// ShardOf returns name's shard: crc32 (IEEE, as in Ethernet, gzip and
// HAProxy's crc32 converter) of the name's bytes mod ShardCount, so the edge
// (HAProxy: crc32,mod(256)) and the database (merch_shard) compute the same.
// It must never change; shard_test.go pins it with golden vectors.
func ShardOf(name string) Shard { return Shard(crc32.ChecksumIEEE([]byte(name)) % ShardCount) }

// ShardOfBytes is ShardOf for a name still in a request buffer.
func ShardOfBytes(name []byte) Shard { return Shard(crc32.ChecksumIEEE(name) % ShardCount) }

// ShardCount must fit Shard (uint8): this fails to compile otherwise.
const _ = uint8(ShardCount - 1)
