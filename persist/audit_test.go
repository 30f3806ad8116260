package persist

import (
	"context"
	"strings"
	"testing"

	"merch/actors"
)

func TestAuditDetectsViolations(t *testing.T) {
	cases := []struct {
		name   string
		breakq string
		want   string // substring of a violation, or "" for the totals check only
	}{
		{"balance drift", `UPDATE users SET balance = balance + 1 WHERE name = 'ann'`, "balance != starting coins"},
		{"ledger without totals", `INSERT INTO transfers (batch, from_user, to_user, amount, shard) VALUES (0, 'ann', 'ben', 5, merch_shard('ann'))`, "transfer ledger"},
		{"inventory without purchase", `INSERT INTO inventory VALUES ('ben', 'cup', 1, merch_shard('ben'))`, "purchase ledger"},
		{"unknown item", `INSERT INTO inventory VALUES ('ben', 'yacht', 1, merch_shard('ben'))`, "not in catalogue"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, pool := mustDB(t)
			j := mustJournal(t, journalConfig(pool, func(err error) { t.Errorf("fatal: %v", err) }))
			for _, n := range []string{"ann", "ben"} {
				if err := mustAppend(t, j, register(n)); err != nil {
					t.Fatal(err)
				}
			}
			cup := item(t, "cup")
			if err := mustAppend(t, j, actors.Record{Kind: actors.Purchased, User: "ann", Item: cup, Amount: cup.Price()}); err != nil {
				t.Fatal(err)
			}
			if err := mustAppend(t, j, actors.Record{Kind: actors.Transferred, User: "ann", Peer: "ben", Amount: 3}); err != nil {
				t.Fatal(err)
			}
			assertConserved(t, pool) // consistent before the damage
			if _, err := pool.Exec(context.Background(), tc.breakq); err != nil {
				t.Fatal(err)
			}
			r, err := Audit(context.Background(), pool)
			if err != nil {
				t.Fatal(err)
			}
			if r.OK() {
				t.Fatalf("audit passed after %q: %s", tc.breakq, r)
			}
			found := false
			for _, v := range r.Violations {
				found = found || strings.Contains(v, tc.want)
			}
			if !found {
				t.Fatalf("violations %v lack %q", r.Violations, tc.want)
			}
		})
	}
}
