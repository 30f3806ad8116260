package actors

// StartingCoins is every new user's balance (API contract).
const StartingCoins Coins = 1000

// UsernameLenMax is the longest accepted username in bytes (API contract).
// Allowed characters are ASCII letters, digits, '_', '-' and '.'.
const UsernameLenMax = 64

// PasswordLenMax is bcrypt's input limit; longer passwords are refused, never
// truncated (API contract).
const PasswordLenMax = 72

// IdempotencyKeyLenMax bounds the Idempotency-Key header: keys are kept in
// memory per resident user and stored in PostgreSQL.
const IdempotencyKeyLenMax = 64

// ValidUsername reports whether name follows the username rule:
// 1..UsernameLenMax bytes of [A-Za-z0-9_.-].
func ValidUsername(name []byte) bool {
	if len(name) == 0 || len(name) > UsernameLenMax {
		return false
	}
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '_' || c == '-' || c == '.':
		default:
			return false
		}
	}
	return true
}
