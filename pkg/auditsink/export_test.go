package auditsink

// DropAcks makes a sink append without acknowledging, to provoke
// redeliveries in tests.
func DropAcks(c *Config) { c.dropAcks = true }
