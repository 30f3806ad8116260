package cluster

import (
	"hash/fnv"

	"merch/actors"
)

// Target places shard s on one of the live nodes by rendezvous (highest
// random weight) hashing: every node computes the same answer from the same
// set, and a node joining or leaving moves only the shards it wins or held
// (about 1/N of them). "" when no node is live.
func Target(s actors.Shard, live []string) string {
	best, bestScore := "", uint64(0)
	for _, n := range live {
		if sc := score(n, s); best == "" || sc > bestScore || (sc == bestScore && n < best) {
			best, bestScore = n, sc
		}
	}
	return best
}

// score is FNV-1a 64 of the node ID, a zero byte and the shard, finished
// with a 64-bit mix (FNV alone clusters on short, similar IDs).
func score(node string, s actors.Shard) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node))
	_, _ = h.Write([]byte{0, byte(s)})
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
