// Package errkind holds the kinds of error Tenet's components return for
// bad requests, so that a front end maps them the same way whichever
// component refused (the admin API to HTTP status codes). Branch with
// errors.Is; the message reads on its own and never names the kind.
package errkind

import (
	"errors"
	"fmt"
)

// The kinds.
var (
	Invalid  = errors.New("invalid")   // the request breaks a rule
	Conflict = errors.New("conflict")  // it clashes with what exists
	NotFound = errors.New("not found") // it names nothing known here
)

type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// Errorf returns an error of kind with the formatted message.
func Errorf(kind error, format string, a ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, a...)}
}

// Wrap prefixes err's message and gives it kind, keeping err for errors.Is.
func Wrap(kind error, err error, format string, a ...any) error {
	return &kindError{kind: errors.Join(kind, err), msg: fmt.Sprintf(format, a...) + ": " + err.Error()}
}
