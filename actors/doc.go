// Package actors owns the domain: wallets, the per-user actors that serialise
// every change to a wallet, the transfer protocol between two users' actors,
// and the Journal interface through which changes become durable.
//
// Invariants kept here:
//   - A user's state is touched only by that user's actor (one hollywood
//     process per resident user); nothing else holds a pointer into it.
//   - A change is validated against the available balance (durable minus
//     reserved), reserved, written to the Journal as one record, and applied
//     to the durable state only when the Journal reports it committed. Only
//     then is the caller answered, so a success reply means durable.
//   - Reads (Info) show durable state only.
//   - Money is conserved: for every user, 1000 + received − sent − spent =
//     balance, checked when a wallet is loaded.
//
// Left to others: HTTP, tokens and password hashing (package api); SQL and
// the group-commit writer (package persist); wiring and shutdown (cmd).
package actors
