// Command wordfreq prints the most frequent words read from standard input.
//
// Usage: wordfreq [-n 10] < file.txt
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"unicode"
)

type entry struct {
	word  string
	count int
}

func main() {
	top := flag.Int("n", 10, "number of words to print")
	flag.Parse()

	counts := make(map[string]int)
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Split(bufio.ScanWords)
	for scanner.Scan() {
		word := strings.TrimFunc(strings.ToLower(scanner.Text()), func(r rune) bool {
			return !unicode.IsLetter(r) && !unicode.IsNumber(r)
		})
		if word != "" {
			counts[word]++
		}
	}
	if err := scanner.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "wordfreq:", err)
		os.Exit(1)
	}

	entries := make([]entry, 0, len(counts))
	for w, c := range counts {
		entries = append(entries, entry{w, c})
	}
	// Ties are broken alphabetically so that the output is stable.
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].count != entries[j].count {
			return entries[i].count > entries[j].count
		}
		return entries[i].word < entries[j].word
	})
	for i, e := range entries {
		if i == *top {
			break
		}
		fmt.Printf("%7d %s\n", e.count, e.word)
	}
}
