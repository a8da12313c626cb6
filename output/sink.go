package output

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// sink is where a Writer's bytes go: the log file, or standard output for
// Path "-". It is an io.WriteCloser whose output is always made of whole
// lines, also when a write fails part way (a full disk):
//
// Write takes lines; p may end inside a line, which the next Write goes
// on with (a long line written in parts). If a write fails after part of
// p reached the output, the partial last line is taken back, also the
// parts of it earlier writes put there: a regular file is truncated to
// the end of the last whole line; where that is impossible (a pipe, a
// terminal), the line is ended with a newline before the next write. Write
// then returns the length of the whole lines of p that are in the output,
// with the error, so the caller can count exactly what was written.
//
// After every successful write to a file, sink checks the file's link
// count: a log deleted while open (by hand, or rotated without a SIGHUP)
// is reported once through warn. The log file is locked (flock, exclusive,
// advisory) while open, so a second probe appending to the same file is
// refused at open instead of interleaving two runs.
//
// A sink is used by one goroutine at a time; Bytes is safe for concurrent
// use.
type sink struct {
	rules  *sinkRules
	path   string   // the log path, for Reopen and messages
	file   *os.File // nil when writing to standard output
	out    io.Writer
	stdout io.Writer // standard output, for path "-"
	torn   bool      // a failed write left a partial line that could not be removed
	open   int       // bytes of an unfinished unit that earlier writes left in the output
	warn   func(string)

	unlinkedWarned bool
	bytes          atomic.Uint64 // bytes in the output, headers and newlines included
	unlinked       atomic.Uint64 // times a log file was found deleted while open
}

// sinkRules are what differs between the files a sink writes: the log
// (whole lines, appended to) and the pcap file (whole pcapng blocks,
// replaced).
type sinkRules struct {
	// what names the file in messages: "log file", "pcap file".
	what string
	// replace empties a file when it is opened (once it is locked)
	// instead of appending to what it holds.
	replace bool
	// whole returns how many bytes of p[:n] end whole units (lines,
	// blocks), counting a unit begun by an earlier write; p starts on a
	// unit if no unit is open. Only units that can be written in parts
	// (lines) may be.
	whole func(p []byte, n int) int
	// mend, if not nil, is written before the next write after a unit
	// was cut short and could not be removed (a pipe, a terminal).
	mend []byte
}

// logRules are the log's: whole lines, appended; a cut line is ended.
var logRules = &sinkRules{
	what:  "log file",
	whole: func(p []byte, n int) int { return bytes.LastIndexByte(p[:n], '\n') + 1 },
	mend:  newline,
}

// openSink opens the log at path ("-" = stdout) for appending, locked.
func openSink(path string, stdout io.Writer, warn func(string)) (*sink, error) {
	return openSinkRules(path, logRules, stdout, warn)
}

// openSinkRules opens path ("-" = stdout) under rules, locked.
func openSinkRules(path string, rules *sinkRules, stdout io.Writer, warn func(string)) (*sink, error) {
	s := &sink{rules: rules, path: path, warn: warn, stdout: stdout}
	if s.stdout == nil {
		s.stdout = os.Stdout
	}
	if path == "-" {
		s.out = s.stdout
		return s, nil
	}
	f, err := openLocked(path, rules)
	if err != nil {
		return nil, err
	}
	s.file, s.out = f, f
	return s, nil
}

// openLocked opens a file for appending (OpenFile's rules) and takes an
// exclusive advisory lock on a regular file; with rules.replace, a locked
// regular file is then emptied.
func openLocked(path string, rules *sinkRules) (*os.File, error) {
	f, err := OpenFile(path, rules.what, os.O_APPEND)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err == nil && !fi.Mode().IsRegular() {
		return f, nil // /dev/null and the like are shared by design
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == nil, errors.Is(err, unix.ENOLCK), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
		// locked, or a file system without locks: go on unlocked
		if rules.replace {
			if err := f.Truncate(0); err != nil {
				f.Close()
				return nil, fmt.Errorf("output: empty %s %s: %w", rules.what, path, err)
			}
		}
		return f, nil
	case errors.Is(err, unix.EWOULDBLOCK):
		f.Close()
		return nil, fmt.Errorf("output: %s %s is locked by another process (another siftr-probe writing to it?): %w", rules.what, path, os.NewSyscallError("flock", err))
	}
	f.Close()
	return nil, fmt.Errorf("output: lock %s %s: %w", rules.what, path, os.NewSyscallError("flock", err))
}

var newline = []byte{'\n'}

// Write writes p, lines that may begin or end in a line written in parts;
// see sink.
func (s *sink) Write(p []byte) (int, error) {
	if s.torn && s.rules.mend != nil {
		n, err := s.out.Write(s.rules.mend)
		s.bytes.Add(uint64(n))
		if err != nil {
			return 0, err
		}
		s.torn = false
	}
	n, err := s.out.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		keep := s.rules.whole(p, n)
		cut := n - keep // of p, and of the earlier parts of a line p did not end
		if keep == 0 {
			cut += s.open
		}
		s.open = 0
		if cut > 0 && !s.truncateTail(cut) {
			s.torn = true
			s.bytes.Add(uint64(n - keep))
		} else if keep == 0 {
			s.bytes.Add(-uint64(cut - n)) // the earlier parts are gone
		}
		s.bytes.Add(uint64(keep))
		return keep, err
	}
	if w := s.rules.whole(p, n); w > 0 {
		s.open = n - w
	} else {
		s.open += n
	}
	s.bytes.Add(uint64(n))
	s.checkLinks()
	return n, nil
}

// truncateTail removes the last k bytes of the file. It reports success.
// The file is locked and opened for appending, so its end is where the last
// write ended.
func (s *sink) truncateTail(k int) bool {
	if s.file == nil {
		return false
	}
	fi, err := s.file.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < int64(k) {
		return false
	}
	return s.file.Truncate(fi.Size()-int64(k)) == nil
}

// checkLinks warns once per file if the open log file has been deleted.
func (s *sink) checkLinks() {
	if s.file == nil || s.unlinkedWarned {
		return
	}
	fi, err := s.file.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Nlink != 0 {
		return
	}
	s.unlinkedWarned = true
	s.unlinked.Add(1)
	if s.warn != nil {
		s.warn(fmt.Sprintf("%s %s was deleted while open: records go to a file no one can see until a SIGHUP reopens the path", s.rules.what, s.path))
	}
}

// name is the log's name in messages.
func (s *sink) name() string {
	if s.path == "-" {
		return "standard output"
	}
	return s.path
}

// Reopen opens the log path again, for rotation: if the file was renamed
// or removed, a new one is created (and locked); the old one is closed once
// the new one is open. If the path still names the open file, nothing
// changes. With standard output it does nothing. It reports whether a new
// file was opened (also when closing the old one then failed).
func (s *sink) Reopen() (bool, error) {
	if s.file == nil {
		return false, nil
	}
	if same, err := s.samePath(); err == nil && same {
		return false, nil
	}
	f, err := openLocked(s.path, s.rules)
	if err != nil {
		return false, err
	}
	old := s.file
	s.file, s.out = f, f
	s.torn = false
	s.unlinkedWarned = false
	if err := old.Close(); err != nil {
		return true, fmt.Errorf("output: close rotated %s %s: %w", s.rules.what, s.path, err)
	}
	return true, nil
}

// Switch makes path ("-": standard output) the log: the new file is opened
// (and locked) first, then the old one is closed; if the new one cannot be
// opened, nothing changes. A path that names the open file already only
// reopens it, as Reopen does.
func (s *sink) Switch(path string) error {
	if path == s.path {
		_, err := s.Reopen()
		return err
	}
	if s.file != nil && path != "-" {
		// Another name of the open file (a relative and an absolute path):
		// opening it again would find it locked, by this very sink.
		cur, err1 := s.file.Stat()
		fi, err2 := os.Lstat(path)
		if err1 == nil && err2 == nil && os.SameFile(cur, fi) {
			s.path = path
			return nil
		}
	}
	var f *os.File
	out := s.stdout
	if path != "-" {
		var err error
		if f, err = openLocked(path, s.rules); err != nil {
			return err
		}
		out = f
	}
	old := s.file
	s.path, s.file, s.out = path, f, out
	s.torn = false
	s.unlinkedWarned = false
	if old != nil {
		if err := old.Close(); err != nil {
			return fmt.Errorf("output: close previous %s: %w", s.rules.what, err)
		}
	}
	return nil
}

// samePath reports whether the log path still names the open file.
func (s *sink) samePath() (bool, error) {
	cur, err := s.file.Stat()
	if err != nil {
		return false, err
	}
	fi, err := os.Lstat(s.path)
	if err != nil {
		return false, err
	}
	return os.SameFile(cur, fi), nil
}

// Close syncs and closes the log file (nothing for standard output). It
// returns the sync error, else the close error.
func (s *sink) Close() error {
	if s.file == nil {
		return nil
	}
	var err error
	if serr := s.file.Sync(); serr != nil && !errors.Is(serr, syscall.EINVAL) && !errors.Is(serr, syscall.ENOTSUP) {
		err = fmt.Errorf("output: sync %s: %w", s.path, serr)
	}
	if cerr := s.file.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("output: close %s: %w", s.path, cerr)
	}
	s.file = nil
	return err
}
