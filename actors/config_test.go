package actors

import "testing"

func TestConfigValidate(t *testing.T) {
	engine := mustEngine(t)
	store := Fakes.MustStore(t)
	good := func() Config {
		c := testConfig()
		c.Engine, c.Journal, c.Store, c.Metrics = engine, Fakes.MustJournal(t, store, 1), store, NopMetrics{}
		return c
	}
	tests := []struct {
		name   string
		modify func(c *Config)
	}{
		{"no engine", func(c *Config) { c.Engine = nil }},
		{"no journal", func(c *Config) { c.Journal = nil }},
		{"no store", func(c *Config) { c.Store = nil }},
		{"no metrics", func(c *Config) { c.Metrics = nil }},
		{"inbox 0", func(c *Config) { c.InboxSize = 0 }},
		{"inflight 0", func(c *Config) { c.InflightPerUserMax = 0 }},
		{"idle 0", func(c *Config) { c.IdleTTL = 0 }},
		{"sweep 0", func(c *Config) { c.SweepInterval = 0 }},
		{"load timeout negative", func(c *Config) { c.LoadTimeout = -1 }},
		{"write timeout 0", func(c *Config) { c.WriteTimeout = 0 }},
		{"read timeout 0", func(c *Config) { c.ReadTimeout = 0 }},
	}
	for _, tc := range tests {
		c := good()
		tc.modify(&c)
		if s, err := NewSystem(c); err == nil {
			s.Close()
			t.Errorf("%s: NewSystem accepted %+v", tc.name, c)
		}
	}
	s, err := NewSystem(good())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Stats(); st != (Stats{}) {
		t.Fatalf("Stats() of a new system = %+v", st)
	}
}
