// Package cluster runs a node's part of a cluster: its shard leases, the
// placement of shards over the live nodes, and the node's view of who owns
// what (for routing).
//
// The lease protocol (persist/lease.go has the SQL):
//
//  1. Every RenewEvery (TTL/3) the manager renews every lease it holds, in
//     one statement that also heartbeats the node. A lease it gets back is
//     held until deadline = the send time of that renewal (monotonic clock)
//     + TTL − Margin. The database sets expiry from its own later clock, so
//     the local deadline falls first as long as the two clocks run at
//     similar rates; past its deadline the node answers nothing for the
//     shard, reads included, until a renewal succeeds. A lease not given
//     back was taken: the node drops it at once (Lost).
//  2. It reads the owners and the live nodes (heartbeat younger than TTL)
//     and places every shard on the live node with the highest rendezvous
//     score (Target): every node computes the same placement from the same
//     view, and a disagreement while views differ costs liveness only —
//     the lease row decides who writes.
//  3. It acquires the shards placed on it whose lease expired (or is its
//     own previous incarnation's), and hands off the shards placed on
//     another live node: Drain (new requests refused, in-flight ones
//     finished, the journal flushed, the shard's actors passivated), then
//     release, so the target acquires it on its next tick.
//  4. A node that stops renewing (killed, paused, cut off) loses its shards
//     after the TTL; the survivors take them. When a paused node resumes,
//     its deadlines have passed (it answers nothing), its renewals fail
//     (epochs moved on), and its batch in flight is fenced by the database
//     (persist/lease.go, step 2).
//
// A Manager is safe for concurrent use: Lease and Owner are read on every
// request (atomics, no locks); Run owns everything else.
package cluster
