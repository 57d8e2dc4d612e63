package main

import (
	"testing"
	"time"
)

// The child's report survives its one-line form, and a damaged line is an
// error, not a zero figure.
func TestNewcomerReportRoundTrip(t *testing.T) {
	want := newcomerReport{took: 734567891 * time.Nanosecond, complete: true, messages: 92, kib: 6852.5, syncs: 1}
	got, err := parseNewcomerReport(want.String())
	if err != nil || got != want {
		t.Fatalf("parse(%q) = %+v, %v; want %+v", want.String(), got, err, want)
	}
	for _, bad := range []string{"", "NEWCOMER", "NEWCOMER x true 1 2 3", "NEWCOMER 5 maybe 1 2 3", "RESULT join 1 tenet x 2"} {
		if _, err := parseNewcomerReport(bad); err == nil {
			t.Errorf("parse(%q): no error", bad)
		}
	}
}
