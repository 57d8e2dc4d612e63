package main

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// runReport prints the RESULT lines of file as one markdown table per
// scenario: a row per metric, a column per (size, implementation).
func runReport(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	type col struct {
		n    int
		impl string
	}
	type table struct {
		cols    []col
		metrics []string
		cells   map[string]map[col]string
	}
	tables := map[string]*table{}
	var order []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 6 || fs[0] != "RESULT" {
			continue
		}
		n, _ := strconv.Atoi(fs[2])
		t := tables[fs[1]]
		if t == nil {
			t = &table{cells: map[string]map[col]string{}}
			tables[fs[1]] = t
			order = append(order, fs[1])
		}
		c := col{n, fs[3]}
		if !slices.Contains(t.cols, c) {
			t.cols = append(t.cols, c)
		}
		if t.cells[fs[4]] == nil {
			t.cells[fs[4]] = map[col]string{}
			t.metrics = append(t.metrics, fs[4])
		}
		t.cells[fs[4]][c] = fs[5]
	}
	for _, name := range order {
		t := tables[name]
		slices.SortStableFunc(t.cols, func(a, b col) int {
			if a.n != b.n {
				return a.n - b.n
			}
			return strings.Compare(a.impl, b.impl)
		})
		fmt.Printf("\n%s\n\n| metric |", name)
		for _, c := range t.cols {
			fmt.Printf(" %d %s |", c.n, c.impl)
		}
		fmt.Printf("\n|---|%s\n", strings.Repeat("---|", len(t.cols)))
		for _, m := range t.metrics {
			fmt.Printf("| %s |", m)
			for _, c := range t.cols {
				v := t.cells[m][c]
				if v == "" {
					v = "–"
				}
				fmt.Printf(" %s |", v)
			}
			fmt.Println()
		}
	}
	return sc.Err()
}
