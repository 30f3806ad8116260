package persist

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"merch/actors"
)

// AuditReport is the money check over the whole database.
type AuditReport struct {
	Users      int64
	Balances   int64 // Σ balances
	Spent      int64 // Σ price × quantity over all inventory
	Pending    int64 // Σ pending credits (sent, not yet folded into the receiver)
	Negative   int64 // users with a negative balance (the CHECK forbids it)
	Violations []string
}

// OK reports whether money is conserved and every cross-check agrees.
func (r AuditReport) OK() bool {
	return len(r.Violations) == 0 && r.Negative == 0 &&
		r.Balances+r.Pending+r.Spent == int64(actors.StartingCoins)*r.Users
}

func (r AuditReport) String() string {
	return fmt.Sprintf("users=%d balances=%d pending=%d spent=%d (want total %d) negative=%d violations=%v",
		r.Users, r.Balances, r.Pending, r.Spent, int64(actors.StartingCoins)*r.Users, r.Negative, r.Violations)
}

// priceValues renders the catalogue as a SQL VALUES list (constants only).
func priceValues() string {
	var b strings.Builder
	for i, id := range actors.Items() {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "('%s', %d)", id.Name(), id.Price())
	}
	return b.String()
}

// Audit checks, in one snapshot: Σ balances + Σ pending credits + Σ
// inventory value = 1000 × users; every user's balance = 1000 + received −
// pending (sent to them, not yet folded) − sent − spent; the
// transfer ledger sums to the pair totals; the purchase ledger matches the
// inventory. Used by tests and the fault harness.
func Audit(ctx context.Context, pool *pgxpool.Pool) (AuditReport, error) {
	var r AuditReport
	tx, err := pool.Begin(ctx)
	if err != nil {
		return r, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY`); err != nil {
		return r, err
	}
	prices := "(VALUES " + priceValues() + ") AS p(item, price)"
	err = tx.QueryRow(ctx, `SELECT count(*), coalesce(sum(balance), 0), count(*) FILTER (WHERE balance < 0) FROM users`).
		Scan(&r.Users, &r.Balances, &r.Negative)
	if err != nil {
		return r, err
	}
	err = tx.QueryRow(ctx, `SELECT coalesce(sum(i.quantity * p.price), 0) FROM inventory i JOIN `+prices+` USING (item)`).
		Scan(&r.Spent)
	if err != nil {
		return r, err
	}
	err = tx.QueryRow(ctx, `SELECT coalesce(sum(amount), 0) FROM pending_credits`).Scan(&r.Pending)
	if err != nil {
		return r, err
	}
	checks := []struct{ what, sql string }{
		{"balance != starting coins + received - pending - sent - spent", `
SELECT u.name FROM users u
LEFT JOIN (SELECT to_user n, sum(amount) a FROM transfer_totals GROUP BY 1) r ON r.n = u.name
LEFT JOIN (SELECT to_user n, sum(amount) a FROM pending_credits GROUP BY 1) p ON p.n = u.name
LEFT JOIN (SELECT from_user n, sum(amount) a FROM transfer_totals GROUP BY 1) s ON s.n = u.name
LEFT JOIN (SELECT user_name n, sum(quantity * price) a FROM inventory JOIN ` + prices + ` USING (item) GROUP BY 1) b ON b.n = u.name
WHERE u.balance <> ` + strconv.FormatInt(int64(actors.StartingCoins), 10) + ` + coalesce(r.a, 0) - coalesce(p.a, 0) - coalesce(s.a, 0) - coalesce(b.a, 0)`},
		{"transfer ledger != pair totals", `
SELECT coalesce(t.from_user, l.from_user) || '->' || coalesce(t.to_user, l.to_user)
FROM transfer_totals t FULL JOIN (SELECT from_user, to_user, sum(amount) amount FROM transfers GROUP BY 1, 2) l
USING (from_user, to_user) WHERE t.amount IS DISTINCT FROM l.amount`},
		{"purchase ledger != inventory", `
SELECT coalesce(i.user_name, l.user_name) || '/' || coalesce(i.item, l.item)
FROM inventory i FULL JOIN (SELECT user_name, item, count(*) quantity FROM purchases GROUP BY 1, 2) l
USING (user_name, item) WHERE i.quantity IS DISTINCT FROM l.quantity`},
		{"item not in catalogue", `SELECT user_name || '/' || item FROM inventory WHERE item NOT IN (SELECT item FROM ` + prices + `)`},
	}
	for _, c := range checks {
		rows, err := tx.Query(ctx, c.sql)
		if err != nil {
			return r, fmt.Errorf("persist: audit %s: %w", c.what, err)
		}
		for rows.Next() {
			var who string
			if err := rows.Scan(&who); err != nil {
				rows.Close()
				return r, err
			}
			r.Violations = append(r.Violations, c.what+": "+who)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return r, err
		}
	}
	return r, nil
}
