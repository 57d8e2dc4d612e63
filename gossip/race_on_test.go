//go:build race

package gossip

// raceEnabled: the race detector slows every memory access several times,
// so tests that judge timing on a ring of many hosts in one process do not
// mean under it what they mean without it.
const raceEnabled = true
