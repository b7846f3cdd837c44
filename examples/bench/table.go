package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/raftor/raftor/examples/bench/internal/load"
)

// row is one line of the table: a (system, mode, clients) over its rounds.
type row struct {
	System  string `json:"system"`
	Mode    string `json:"mode"`
	Clients int    `json:"clients"`
	Payload int    `json:"payload"`
	Rounds  int    `json:"rounds"`

	// WritesPerSec and the latencies are means over the rounds; Spread is
	// (max - min) / mean of the rounds' writes/s.
	WritesPerSec float64 `json:"writes_per_sec"`
	Spread       float64 `json:"writes_per_sec_spread"`
	P50Micros    float64 `json:"p50_us"`
	P99Micros    float64 `json:"p99_us"`
	P999Micros   float64 `json:"p999_us"`

	CPUPer1000   float64 `json:"cpu_seconds_per_1000_writes"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	// FsyncsPerSec and EntriesPerFsync are -1 where the syncs are not visible.
	FsyncsPerSec    float64 `json:"fsyncs_per_sec"`
	EntriesPerFsync float64 `json:"entries_per_fsync"`
	Errors          int64   `json:"errors"`
	// LogWriteP50Micros is the mean over the rounds of the median log
	// write (Raftor only).
	LogWriteP50Micros float64 `json:"log_write_p50_us,omitempty"`
	// LogWriteP99Micros and LogWriteMaxMicros are the means over the
	// rounds of the same log writes' p99 and longest.
	LogWriteP99Micros float64 `json:"log_write_p99_us,omitempty"`
	LogWriteMaxMicros float64 `json:"log_write_max_us,omitempty"`
	// WriteStalls and WriteStallMicros are the log stores' write stalls
	// over every round, and their time in all.
	WriteStalls      int64   `json:"write_stalls,omitempty"`
	WriteStallMicros float64 `json:"write_stall_us,omitempty"`
}

func aggregate(runs []load.Result, systems, modes []string) []row {
	type key struct {
		system, mode string
		clients      int
	}
	groups := map[key][]load.Result{}
	var order []key
	for _, r := range runs {
		k := key{r.System, r.Mode, r.Clients}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	slices.SortStableFunc(order, func(a, b key) int {
		if c := slices.Index(modes, a.mode) - slices.Index(modes, b.mode); c != 0 {
			return c
		}
		if a.clients != b.clients {
			return a.clients - b.clients
		}
		return slices.Index(systems, a.system) - slices.Index(systems, b.system)
	})
	var rows []row
	for _, k := range order {
		rs := groups[k]
		w := row{System: k.system, Mode: k.mode, Clients: k.clients, Payload: rs[0].Payload, Rounds: len(rs),
			FsyncsPerSec: -1, EntriesPerFsync: -1}
		var writes, fsyncs, entries int64
		var secs, cpu float64
		lo, hi := rs[0].WritesPerSec, rs[0].WritesPerSec
		visible := true
		for _, r := range rs {
			n := float64(len(rs))
			w.WritesPerSec += r.WritesPerSec / n
			w.P50Micros += r.P50Micros / n
			w.P99Micros += r.P99Micros / n
			w.P999Micros += r.P999Micros / n
			w.LogWriteP50Micros += r.LogWriteP50Micros / n
			w.LogWriteP99Micros += r.LogWriteP99Micros / n
			w.LogWriteMaxMicros += r.LogWriteMaxMicros / n
			w.WriteStalls += r.WriteStalls
			w.WriteStallMicros += r.WriteStallMicros
			lo, hi = min(lo, r.WritesPerSec), max(hi, r.WritesPerSec)
			writes += r.Writes
			secs += r.Seconds
			cpu += r.CPUSeconds
			w.PeakRSSBytes = max(w.PeakRSSBytes, r.PeakRSSBytes)
			w.Errors += r.Errors
			if r.Fsyncs < 0 {
				visible = false
			}
			fsyncs += r.Fsyncs
			entries += r.SyncedEntries
		}
		if w.WritesPerSec > 0 {
			w.Spread = (hi - lo) / w.WritesPerSec
		}
		if writes > 0 {
			w.CPUPer1000 = cpu / float64(writes) * 1000
		}
		if visible && secs > 0 {
			w.FsyncsPerSec = float64(fsyncs) / secs
			if fsyncs > 0 {
				w.EntriesPerFsync = float64(entries) / float64(fsyncs)
			}
		}
		rows = append(rows, w)
	}
	return rows
}

func printReport(out io.Writer, rep report) {
	m := rep.Machine
	fmt.Fprintf(out, "machine: %s, %d CPUs, %s memory, %s/%s, %s; data on %s\n",
		m.CPU, m.CPUs, fmtBytes(m.MemoryBytes), m.OS, m.Arch, m.GoVersion, m.DataDir)
	if m.LoadAverage != "" {
		fmt.Fprintf(out, "load average when the run started: %s (other work on the machine shows in every figure)\n", m.LoadAverage)
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tmode\tclients\tpayload\twrites/s\tspread\tp50\tp99\tp999\tCPU s/1k writes\tpeak RSS\tfsyncs/s\tentries/fsync\terrors\t")
	for _, r := range rep.Rows {
		fs, epf := "-", "-"
		if r.FsyncsPerSec >= 0 {
			fs = fmt.Sprintf("%.0f", r.FsyncsPerSec)
		}
		if r.EntriesPerFsync >= 0 {
			epf = fmt.Sprintf("%.1f", r.EntriesPerFsync)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t±%.0f%%\t%s\t%s\t%s\t%.3f\t%s\t%s\t%s\t%d\t\n",
			r.System, r.Mode, r.Clients, r.Payload, r.WritesPerSec, r.Spread*50,
			fmtMicros(r.P50Micros), fmtMicros(r.P99Micros), fmtMicros(r.P999Micros),
			r.CPUPer1000, fmtBytes(r.PeakRSSBytes), fs, epf, r.Errors)
	}
	tw.Flush()
	printLogWrites(out, rep.Rows)
	for _, ms := range rep.Missing {
		fmt.Fprintf(out, "%s %s: not available: %s\n", ms.System, ms.Mode, ms.Reason)
	}
	if f := rep.Floor; f != nil {
		fmt.Fprintf(out, "\nfloor, measured in this run (%d samples each):\n", f.Samples)
		fmt.Fprintf(out, "  Pebble batch commit with Sync=true, 128 B: p50 %s, p99 %s\n", fmtMicros(f.FsyncP50Micros), fmtMicros(f.FsyncP99Micros))
		fmt.Fprintf(out, "  protoactor remote request-response on loopback: p50 %s, p99 %s\n", fmtMicros(f.RTTP50Micros), fmtMicros(f.RTTP99Micros))
		if f.SharedFsyncP50Micros > 0 {
			fmt.Fprintf(out, "  (not in the floor) the same commit while three Pebble stores on this disk commit at once, as the three nodes do: p50 %s, p99 %s\n",
				fmtMicros(f.SharedFsyncP50Micros), fmtMicros(f.SharedFsyncP99Micros))
		}
		for _, r := range rep.Rows {
			if r.System == "raftor" && r.Mode == "durable" && r.Clients == 1 && f.sumP50() > 0 {
				fmt.Fprintf(out, "  raftor durable, 1 client: p50 %s = %.1f x the floor (fsync p50 + round trip p50 = %s)\n",
					fmtMicros(r.P50Micros), r.P50Micros/f.sumP50(), fmtMicros(f.sumP50()))
				if r.LogWriteP50Micros > 0 {
					fmt.Fprintf(out, "  raftor durable, 1 client: its own log writes (store Append, one synced batch) took p50 %s in that run\n",
						fmtMicros(r.LogWriteP50Micros))
				}
				if shared := f.SharedFsyncP50Micros + f.RTTP50Micros; f.SharedFsyncP50Micros > 0 {
					fmt.Fprintf(out, "  raftor durable, 1 client: p50 = %.1f x (three-at-once fsync p50 + round trip p50 = %s)\n",
						r.P50Micros/shared, fmtMicros(shared))
				}
			}
		}
	}
}

// printLogWrites sets the clients' tail of each row whose system timed its
// own log writes beside those writes' tail: a slow synced write (a flush or
// a compaction competing for the disk) holds up every client waiting on it.
func printLogWrites(out io.Writer, rows []row) {
	header := false
	for _, r := range rows {
		if r.LogWriteP50Micros <= 0 {
			continue
		}
		if !header {
			fmt.Fprintf(out, "\nlog writes (one synced store Append on any node) beside the clients' latency:\n")
			header = true
		}
		fmt.Fprintf(out, "  %s %s, %s: log write p50 %s, p99 %s, longest %s; client write p99 %s, p999 %s; %d write stalls (%s in all, %d rounds)\n",
			r.System, r.Mode, clientsText(r.Clients), fmtMicros(r.LogWriteP50Micros), fmtMicros(r.LogWriteP99Micros),
			fmtMicros(r.LogWriteMaxMicros), fmtMicros(r.P99Micros), fmtMicros(r.P999Micros),
			r.WriteStalls, fmtMicros(r.WriteStallMicros), r.Rounds)
	}
}

func clientsText(n int) string {
	if n == 1 {
		return "1 client"
	}
	return fmt.Sprintf("%d clients", n)
}

func fmtMicros(us float64) string {
	switch {
	case us <= 0:
		return "-"
	case us < 1000:
		return fmt.Sprintf("%.0fµs", us)
	case us < 10000:
		return fmt.Sprintf("%.2fms", us/1000)
	case us < 1e6:
		return fmt.Sprintf("%.1fms", us/1000)
	}
	return fmt.Sprintf("%.2fs", us/1e6)
}

func fmtBytes(b int64) string {
	switch {
	case b <= 0:
		return "-"
	case b < 1<<20:
		return fmt.Sprintf("%d KiB", b>>10)
	case b < 1<<30:
		return fmt.Sprintf("%d MiB", b>>20)
	}
	return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
}

// machine describes where the run happened.
type machine struct {
	CPU         string `json:"cpu"`
	CPUs        int    `json:"cpus"`
	MemoryBytes int64  `json:"memory_bytes"`
	OS          string `json:"os"`
	Arch        string `json:"arch"`
	GoVersion   string `json:"go_version"`
	DataDir     string `json:"data_dir"`
	// LoadAverage is /proc/loadavg's 1, 5 and 15 minute figures when the
	// run started: other work on the machine shows up in every figure.
	LoadAverage string `json:"load_average,omitempty"`
}

func describeMachine(dataDir string) machine {
	m := machine{CPU: "unknown CPU", CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		GoVersion: runtime.Version(), DataDir: dataDir}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	m.MemoryBytes = totalMemory()
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAverage = strings.Join(f[:3], " ")
		}
	}
	return m
}
