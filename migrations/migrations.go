// Package migrations holds the versioned SQL schema, embedded so the server
// binary applies it at start. Files follow golang-migrate's naming:
// NNNN_name.up.sql and NNNN_name.down.sql (every change is reversible).
package migrations

import "embed"

// FS holds every migration file.
//
//go:embed *.sql
var FS embed.FS
