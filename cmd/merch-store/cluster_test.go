package main

import (
	"fmt"
	"testing"
	"time"

	"merch/actors"
)

func clusterConfig(url, node string) Config {
	c := testConfig(url)
	c.NodeID, c.InternalAddr, c.LeaseTTL = node, "127.0.0.1:0", time.Second
	return c
}

// waitSplit waits until the nodes hold every shard between them, each
// some.
func waitSplit(t *testing.T, nodes ...*server) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		total, each := 0, true
		for _, n := range nodes {
			h := len(n.m.node.mgr.HeldShards())
			total += h
			each = each && h > 0
		}
		if total == actors.ShardCount && each {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("shards not split between the nodes: total %d", total)
		}
		time.Sleep(20 * time.Millisecond) // polls the lease managers' ticks
	}
}

// TestClusterTwoNodes: two nodes on one database split the shards; any
// node serves any user (forwarding to the owner); transfers between users
// of different owners are visible on both sides at once and money is
// conserved with nothing pending at the end.
func TestClusterTwoNodes(t *testing.T) {
	url := mustDatabase(t)
	a := mustStart(t, clusterConfig(url, "na"))
	b := mustStart(t, clusterConfig(url, "nb"))
	waitSplit(t, a, b)
	const users = 16
	tokens := map[string]string{}
	for i := range users {
		name := fmt.Sprintf("cu%02d", i)
		via := a
		if i%2 == 1 {
			via = b
		}
		tokens[name] = via.auth(name, "pw")
	}
	// Both owners are represented.
	owners := map[string]int{}
	for name := range tokens {
		node, _, _ := a.m.node.mgr.Owner(actors.ShardOf(name))
		owners[node]++
	}
	if owners["na"] == 0 || owners["nb"] == 0 {
		t.Fatalf("users all on one node: %v", owners)
	}
	// Transfers in every direction, through both nodes.
	var sent int64
	for i := range users {
		from, to := fmt.Sprintf("cu%02d", i), fmt.Sprintf("cu%02d", (i+5)%users)
		via := []*server{a, b}[i%2]
		if code, body := via.send(tokens[from], to, int64(10+i)); code != 200 {
			t.Fatalf("send %s→%s via %d: %d %s", from, to, i%2, code, body)
		}
		sent += int64(10 + i)
		// The receiver sees it at once, through either node.
		for _, n := range []*server{a, b} {
			info, _ := n.info(tokens[to])
			found := false
			for _, r := range info.CoinHistory.Received {
				if r.FromUser == from {
					found = true
				}
			}
			if !found {
				t.Fatalf("%s's info via a node lacks the credit from %s", to, from)
			}
		}
	}
	// Every user reads the same through both nodes.
	for name, tok := range tokens {
		ia, ba := a.info(tok)
		ib, bb := b.info(tok)
		if string(ba) != string(bb) || ia.Coins != ib.Coins {
			t.Fatalf("%s differs between nodes:\n%s\n%s", name, ba, bb)
		}
	}
	r := mustAudit(t, url, users)
	if r.Pending != 0 {
		t.Fatalf("pending credits left: %d", r.Pending)
	}
	if a.m.api.Forwards()["answered"]+b.m.api.Forwards()["answered"] == 0 {
		t.Fatal("nothing was forwarded: the test did not cross nodes")
	}
}
