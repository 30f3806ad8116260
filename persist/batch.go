package persist

import (
	"slices"

	"github.com/jackc/pgx/v5"

	"merch/actors"
)

// entry is one queued record. Records are copied into the queue by value.
type entry struct {
	rec actors.Record
}

type pairKey struct{ a, b string }

// batch aggregates queued records into set-based statements. Its slices and
// maps are reused from batch to batch; owned by the writer goroutine.
type batch struct {
	id      int64
	entries []entry

	regNames  []string
	regHashes [][]byte
	regShards []int16

	purUsers, purItems []string
	purPrices          []int64
	purShards          []int16
	purEpochs          []int64

	trFrom, trTo []string
	trAmounts    []int64
	trShards     []int16
	trEpochs     []int64

	balance map[string]int64
	inv     map[pairKey]int64
	totals  map[pairKey]int64

	keyUsers, keyKeys, keyKinds, keyItems, keyPeers []string
	keyAmounts                                      []int64
	keyShards                                       []int16

	// pending credits written (TransferredOut) and shards folded (Folded)
	pcFromShards, pcToShards []int16
	pcFrom, pcTo             []string
	pcAmounts                []int64
	foldShards               []int16
	credits                  []actors.Credit // what the fold applied, this attempt

	// balance deltas as sorted arrays (reused)
	names []string
	n     []int64

	regConflicts map[string]bool
}

func newBatch() *batch {
	return &batch{balance: map[string]int64{}, inv: map[pairKey]int64{},
		totals: map[pairKey]int64{}, regConflicts: map[string]bool{}}
}

func (b *batch) reset() {
	clear(b.entries)
	b.entries = b.entries[:0]
	b.regNames, b.regHashes, b.regShards = b.regNames[:0], b.regHashes[:0], b.regShards[:0]
	b.purUsers, b.purItems, b.purPrices = b.purUsers[:0], b.purItems[:0], b.purPrices[:0]
	b.purShards, b.purEpochs = b.purShards[:0], b.purEpochs[:0]
	b.trFrom, b.trTo, b.trAmounts = b.trFrom[:0], b.trTo[:0], b.trAmounts[:0]
	b.trShards, b.trEpochs = b.trShards[:0], b.trEpochs[:0]
	clear(b.balance)
	clear(b.inv)
	clear(b.totals)
	clear(b.regConflicts)
	b.keyUsers, b.keyKeys, b.keyKinds = b.keyUsers[:0], b.keyKeys[:0], b.keyKinds[:0]
	b.keyItems, b.keyPeers, b.keyAmounts = b.keyItems[:0], b.keyPeers[:0], b.keyAmounts[:0]
	b.keyShards = b.keyShards[:0]
	b.pcFromShards, b.pcToShards, b.pcFrom, b.pcTo = b.pcFromShards[:0], b.pcToShards[:0], b.pcFrom[:0], b.pcTo[:0]
	b.pcAmounts, b.foldShards, b.credits = b.pcAmounts[:0], b.foldShards[:0], b.credits[:0]
}

// aggregate folds the entries into per-statement arrays: ledgers row by
// row; balances, inventory and pair totals summed per key, so each is one
// statement whatever the batch size.
func (b *batch) aggregate() {
	for i := range b.entries {
		r := &b.entries[i].rec
		switch r.Kind {
		case actors.Registered:
			b.regNames = append(b.regNames, r.User)
			b.regHashes = append(b.regHashes, r.PasswordHash)
			b.regShards = append(b.regShards, shardOf(r.User))
		case actors.Purchased:
			item := r.Item.Name()
			b.purUsers = append(b.purUsers, r.User)
			b.purItems = append(b.purItems, item)
			b.purPrices = append(b.purPrices, int64(r.Amount))
			b.purShards = append(b.purShards, shardOf(r.User))
			b.purEpochs = append(b.purEpochs, int64(r.Epoch))
			b.balance[r.User] -= int64(r.Amount)
			b.inv[pairKey{r.User, item}]++
		case actors.Transferred:
			b.trFrom = append(b.trFrom, r.User)
			b.trTo = append(b.trTo, r.Peer)
			b.trAmounts = append(b.trAmounts, int64(r.Amount))
			b.trShards = append(b.trShards, shardOf(r.User))
			b.trEpochs = append(b.trEpochs, int64(r.Epoch))
			b.balance[r.User] -= int64(r.Amount)
			b.balance[r.Peer] += int64(r.Amount)
			b.totals[pairKey{r.User, r.Peer}] += int64(r.Amount)
		case actors.TransferredOut:
			b.trFrom = append(b.trFrom, r.User)
			b.trTo = append(b.trTo, r.Peer)
			b.trAmounts = append(b.trAmounts, int64(r.Amount))
			b.trShards = append(b.trShards, shardOf(r.User))
			b.trEpochs = append(b.trEpochs, int64(r.Epoch))
			b.balance[r.User] -= int64(r.Amount)
			b.totals[pairKey{r.User, r.Peer}] += int64(r.Amount)
			b.pcFromShards = append(b.pcFromShards, shardOf(r.User))
			b.pcToShards = append(b.pcToShards, shardOf(r.Peer))
			b.pcFrom = append(b.pcFrom, r.User)
			b.pcTo = append(b.pcTo, r.Peer)
			b.pcAmounts = append(b.pcAmounts, int64(r.Amount))
		case actors.Folded:
			if !slices.Contains(b.foldShards, int16(r.Shard)) {
				b.foldShards = append(b.foldShards, int16(r.Shard))
			}
		}
		if r.Key != "" {
			b.keyUsers = append(b.keyUsers, r.User)
			b.keyKeys = append(b.keyKeys, r.Key)
			b.keyKinds = append(b.keyKinds, keyKind(r.Kind))
			b.keyItems = append(b.keyItems, r.Item.Name())
			b.keyPeers = append(b.keyPeers, r.Peer)
			b.keyAmounts = append(b.keyAmounts, int64(r.Amount))
			b.keyShards = append(b.keyShards, shardOf(r.User))
		}
	}
}

// statement kinds, in the order they are queued, so results can be checked.
type stmt uint8

const (
	stmtBegin stmt = iota
	stmtRegister
	stmtPurchases
	stmtTransfers
	stmtBalance
	stmtInventory
	stmtTotals
	stmtExpireKeys
	stmtKeys
	stmtPending
	stmtFold
)

// queue fills pb with the batch's statements and returns their kinds.
// Registrations go first: a user's other records are never in the batch
// that creates it (registration completes before the user gets a token).
func (b *batch) queue(pb *pgx.Batch, writer string, incarnation, version int64, kinds []stmt) []stmt {
	pb.Queue(beginSQL, writer, incarnation, b.id, version)
	kinds = append(kinds, stmtBegin)
	if len(b.foldShards) > 0 {
		pb.Queue(foldSQL, b.foldShards)
		kinds = append(kinds, stmtFold)
	}
	if len(b.regNames) > 0 {
		pb.Queue(registerSQL, b.regNames, b.regHashes, int64(actors.StartingCoins), b.regShards)
		kinds = append(kinds, stmtRegister)
	}
	if len(b.purUsers) > 0 {
		pb.Queue(purchasesSQL, b.id, b.purUsers, b.purItems, b.purPrices, b.purShards, b.purEpochs)
		kinds = append(kinds, stmtPurchases)
	}
	if len(b.trFrom) > 0 {
		pb.Queue(transfersSQL, b.id, b.trFrom, b.trTo, b.trAmounts, b.trShards, b.trEpochs)
		kinds = append(kinds, stmtTransfers)
	}
	if len(b.balance) > 0 {
		b.names, b.n = sortedSums(b.balance, b.names[:0], b.n[:0])
		pb.Queue(balanceSQL, b.names, b.n)
		kinds = append(kinds, stmtBalance)
	}
	if len(b.inv) > 0 {
		us, items, q := sortedPairs(b.inv)
		pb.Queue(inventorySQL, us, items, q, shardsOf(us))
		kinds = append(kinds, stmtInventory)
	}
	if len(b.totals) > 0 {
		f, t, a := sortedPairs(b.totals)
		pb.Queue(totalsSQL, f, t, a, shardsOf(f))
		kinds = append(kinds, stmtTotals)
	}
	if len(b.pcFrom) > 0 {
		pb.Queue(pendingSQL, b.pcFromShards, b.pcToShards, b.pcFrom, b.pcTo, b.pcAmounts)
		kinds = append(kinds, stmtPending)
	}
	if len(b.keyKeys) > 0 {
		pb.Queue(expireKeysSQL, b.keyUsers, b.keyKeys, KeyRetention.String())
		kinds = append(kinds, stmtExpireKeys)
		pb.Queue(keysSQL, b.keyUsers, b.keyKeys, b.keyKinds, b.keyItems, b.keyPeers, b.keyAmounts, b.keyShards)
		kinds = append(kinds, stmtKeys)
	}
	return kinds
}

// keyKind is how a keyed change is stored: a transfer is a transfer to the
// client, whoever owns the receiver.
func keyKind(k actors.RecordKind) string {
	if k == actors.TransferredOut {
		return actors.Transferred.String()
	}
	return k.String()
}

// shardOf is actors.ShardOf as the database's smallint.
func shardOf(name string) int16 { return int16(actors.ShardOf(name)) }

func shardsOf(names []string) []int16 {
	out := make([]int16, len(names))
	for i, n := range names {
		out[i] = shardOf(n)
	}
	return out
}

// assumeRegistered marks every registration of the batch as a conflict:
// used when the batch committed in an attempt whose answer was lost, so
// which names were new is unknown. The caller then verifies the password
// against the stored user, which is right either way.
func (b *batch) assumeRegistered() {
	for _, n := range b.regNames {
		b.regConflicts[n] = true
	}
}

// sortedSums returns the map's keys sorted, with their values. Sorting
// makes every batch touch rows in one order (deterministic, easy to read in
// logs); the single writer already rules out deadlocks.
func sortedSums(m map[string]int64, names []string, sums []int64) ([]string, []int64) {
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		sums = append(sums, m[k])
	}
	return names, sums
}

func sortedPairs(m map[pairKey]int64) (a, b []string, n []int64) {
	keys := make([]pairKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y pairKey) int {
		if x.a != y.a {
			if x.a < y.a {
				return -1
			}
			return 1
		}
		if x.b < y.b {
			return -1
		}
		if x.b > y.b {
			return 1
		}
		return 0
	})
	a, b, n = make([]string, len(keys)), make([]string, len(keys)), make([]int64, len(keys))
	for i, k := range keys {
		a[i], b[i], n[i] = k.a, k.b, m[k]
	}
	return a, b, n
}
