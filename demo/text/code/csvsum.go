// Command csvsum adds up one numeric column of a CSV file.
//
// Usage: csvsum -col price orders.csv
package main

import (
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
)

func sumColumn(r io.Reader, name string) (total float64, rows int, err error) {
	reader := csv.NewReader(r)
	header, err := reader.Read()
	if err != nil {
		return 0, 0, fmt.Errorf("reading header: %w", err)
	}
	col := -1
	for i, h := range header {
		if h == name {
			col = i
		}
	}
	if col < 0 {
		return 0, 0, fmt.Errorf("no column named %q", name)
	}
	for {
		record, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return total, rows, nil
		}
		if err != nil {
			return total, rows, err
		}
		value, err := strconv.ParseFloat(record[col], 64)
		if err != nil {
			return total, rows, fmt.Errorf("row %d: %w", rows+2, err)
		}
		total += value
		rows++
	}
}

func main() {
	column := flag.String("col", "amount", "name of the column to add up")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: csvsum -col NAME FILE")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	total, rows, err := sumColumn(f, *column)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("%d rows, total %.2f\n", rows, total)
}
