package actors

import (
	"strings"
	"testing"
)

func TestValidUsername(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"a", true},
		{"Alice_Bob-1.2", true},
		{"0", true},
		{"._-", true},
		{strings.Repeat("x", UsernameLenMax), true},
		{strings.Repeat("x", UsernameLenMax+1), false},
		{"", false},
		{"a b", false},
		{"a/b", false},
		{"a\"b", false},
		{"a\\b", false},
		{"a\x00", false},
		{"a\n", false},
		{"ä", false},
		{"用户", false},
		{"a+b", false},
		{"a@b", false},
		{"a:b", false},
	}
	for _, tc := range tests {
		if got := ValidUsername([]byte(tc.name)); got != tc.want {
			t.Errorf("ValidUsername(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
