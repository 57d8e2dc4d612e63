package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// memberlistLogger adapts slog for memberlist, which only takes a
// *log.Logger: it maps the "[DEBUG]", "[INFO]", "[WARN]" and "[ERR]"
// prefixes of its lines to levels, and marks each line source=memberlist
// (its "memberlist: " prefix dropped), so that a reader can tell its
// reports from Tenet's.
func memberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(&levelWriter{log: l}, "", 0)
}

type levelWriter struct{ log *slog.Logger }

func (w *levelWriter) Write(p []byte) (int, error) {
	msg := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, c := range []struct {
		prefix string
		level  slog.Level
	}{
		{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo},
		{"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}, {"[ERROR]", slog.LevelError},
	} {
		if bytes.HasPrefix(msg, []byte(c.prefix)) {
			level = c.level
			msg = bytes.TrimSpace(msg[len(c.prefix):])
			break
		}
	}
	msg = bytes.TrimPrefix(msg, []byte("memberlist: "))
	w.log.Log(context.Background(), level, string(msg), "source", "memberlist")
	return len(p), nil
}
