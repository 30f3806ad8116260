package actors

import "testing"

// Catalogue ids used in the tables.
const (
	tshirt    ItemID = 1
	cup       ItemID = 2
	book      ItemID = 3
	pen       ItemID = 4
	powerbank ItemID = 5
	hoody     ItemID = 6
	umbrella  ItemID = 7
	socks     ItemID = 8
	walletID  ItemID = 9
	pinkHoody ItemID = 10
)

func TestCatalogue(t *testing.T) {
	want := []struct {
		name  string
		price Coins
	}{
		{"t-shirt", 80}, {"cup", 20}, {"book", 50}, {"pen", 10}, {"powerbank", 200},
		{"hoody", 300}, {"umbrella", 200}, {"socks", 10}, {"wallet", 50}, {"pink-hoody", 500},
	}
	items := Items()
	if len(items) != len(want) {
		t.Fatalf("Items() = %v", items)
	}
	for i, id := range items {
		if id != ItemID(i+1) || !id.Valid() || id.Name() != want[i].name || id.Price() != want[i].price {
			t.Errorf("item %d = %d %q %d, want %q %d", i, id, id.Name(), id.Price(), want[i].name, want[i].price)
		}
		got, ok := LookupItem([]byte(want[i].name))
		if !ok || got != id {
			t.Errorf("LookupItem(%q) = %d, %v", want[i].name, got, ok)
		}
	}
	for _, id := range []ItemID{0, itemCount + 1, 255} {
		if id.Valid() || id.Name() != "" || id.Price() != 0 {
			t.Errorf("item %d: valid %v name %q price %d", id, id.Valid(), id.Name(), id.Price())
		}
	}
}

func TestLookupItem(t *testing.T) {
	tests := []struct {
		name   string
		want   ItemID
		wantOK bool
	}{
		{"t-shirt", tshirt, true},
		{"pink-hoody", pinkHoody, true},
		{"wallet", walletID, true},
		{"", 0, false},
		{"Cup", 0, false},
		{"cup ", 0, false},
		{" cup", 0, false},
		{"hoody2", 0, false},
		{"pink", 0, false},
		{"t-shirts", 0, false},
	}
	for _, tc := range tests {
		got, ok := LookupItem([]byte(tc.name))
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("LookupItem(%q) = %d, %v; want %d, %v", tc.name, got, ok, tc.want, tc.wantOK)
		}
	}
	if got, ok := LookupItem(nil); got != 0 || ok {
		t.Errorf("LookupItem(nil) = %d, %v", got, ok)
	}
}
