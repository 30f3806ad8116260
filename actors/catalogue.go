package actors

// Coins is an amount of the store's currency. Amounts are whole coins.
type Coins int64

// ItemID identifies a catalogue item. The zero value is not an item.
type ItemID uint8

// itemCount is the number of catalogue items; ItemID values are 1..itemCount.
const itemCount = 10

type catalogueEntry struct {
	name  string
	price Coins
}

// catalogue is fixed by the API contract. Index 0 is unused so that the zero
// ItemID means "no item".
var catalogue = [itemCount + 1]catalogueEntry{
	{},
	{"t-shirt", 80},
	{"cup", 20},
	{"book", 50},
	{"pen", 10},
	{"powerbank", 200},
	{"hoody", 300},
	{"umbrella", 200},
	{"socks", 10},
	{"wallet", 50},
	{"pink-hoody", 500},
}

// LookupItem returns the item with the given name. It does not allocate.
func LookupItem(name []byte) (ItemID, bool) {
	for id := ItemID(1); id <= itemCount; id++ {
		if string(name) == catalogue[id].name {
			return id, true
		}
	}
	return 0, false
}

// Valid reports whether id names a catalogue item.
func (id ItemID) Valid() bool { return id >= 1 && id <= itemCount }

// Name returns the item's name, or "" for an invalid id.
func (id ItemID) Name() string {
	if !id.Valid() {
		return ""
	}
	return catalogue[id].name
}

// Price returns the item's price, or 0 for an invalid id.
func (id ItemID) Price() Coins {
	if !id.Valid() {
		return 0
	}
	return catalogue[id].price
}

// Items returns every catalogue item in catalogue order.
func Items() []ItemID {
	ids := make([]ItemID, 0, itemCount)
	for id := ItemID(1); id <= itemCount; id++ {
		ids = append(ids, id)
	}
	return ids
}
