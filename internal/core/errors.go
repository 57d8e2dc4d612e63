package core

import "github.com/tenet-net/tenet/internal/errkind"

// Kinds of errors, for front ends that map them; branch with errors.Is.
var (
	ErrInvalid  = errkind.Invalid
	ErrConflict = errkind.Conflict
	ErrNotFound = errkind.NotFound
)

var (
	kindErrorf = errkind.Errorf
	wrapKind   = errkind.Wrap
)
