package main

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func TestGenkeyHelpPrintsHelpNotAKey(t *testing.T) {
	for _, args := range [][]string{{"genkey", "--help"}, {"genkey", "-h"}} {
		var out, errb bytes.Buffer
		if code := cli(args, &out, &errb); code != 0 || out.Len() != 0 || !strings.Contains(errb.String(), "usage: tenetd genkey") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := cli([]string{"genkey"}, &out, &errb); code != 0 {
		t.Fatalf("genkey: exit %d %s", code, errb.String())
	}
	if k, err := hex.DecodeString(strings.TrimSpace(out.String())); err != nil || len(k) != 32 {
		t.Fatalf("genkey printed %q", out.String())
	}
	if code := cli([]string{"genkey", "extra"}, &out, &errb); code != 2 {
		t.Errorf("genkey with an argument: exit %d", code)
	}
}

func TestFlagErrorsExitTwoAndHelpZero(t *testing.T) {
	var out, errb bytes.Buffer
	if code := cli([]string{"--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "--vtep") {
		t.Errorf("--help: %d %q", code, errb.String())
	}
	if code := cli([]string{"--bogus"}, &out, &errb); code != 2 {
		t.Errorf("unknown flag: %d", code)
	}
	if code := cli([]string{"stray"}, &out, &errb); code != 2 {
		t.Errorf("stray argument: %d", code)
	}
}
