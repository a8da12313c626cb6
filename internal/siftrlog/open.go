package siftrlog

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression is how an input was compressed, from its magic bytes.
type Compression uint8

// Compressions Decompress recognises.
const (
	Plain Compression = iota
	Gzip
	Zstd
)

func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return "plain"
}

// Decompress returns r decompressed if it starts with the gzip or zstd
// magic bytes, else r as it is (buffered). Concatenated gzip members and
// zstd frames are read as one stream. Close the returned reader to release
// the decoder; it does not close r.
func Decompress(r io.Reader) (io.ReadCloser, Compression, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, Gzip, fmt.Errorf("gzip: %w", err)
		}
		return zr, Gzip, nil
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, Zstd, fmt.Errorf("zstd: %w", err)
		}
		return zstdCloser{zr}, Zstd, nil
	}
	return io.NopCloser(br), Plain, nil
}

type zstdCloser struct{ *zstd.Decoder }

func (z zstdCloser) Close() error { z.Decoder.Close(); return nil }

// Input is an opened log: the decompressed stream, and the raw file for
// progress (how far into it the decoder is).
type Input struct {
	io.Reader
	Name        string // the path, or "-" for stdin
	Compression Compression
	Size        int64 // the raw file's size; 0 when unknown (stdin, a pipe)
	raw         *countingReader
	closers     []io.Closer
}

// RawBytes returns how many bytes of the raw (compressed) input were read.
func (in *Input) RawBytes() int64 { return in.raw.n }

// Close closes the decoder and the file.
func (in *Input) Close() error {
	var err error
	for i := len(in.closers) - 1; i >= 0; i-- {
		if e := in.closers[i].Close(); e != nil && err == nil {
			err = e
		}
	}
	return err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Open opens the log at path, "-" meaning stdin, and decompresses it if
// needed. Errors name the path ("x.log: no such file").
func Open(path string, stdin io.Reader) (*Input, error) {
	in := &Input{Name: path}
	var r io.Reader
	if path == "-" {
		r = stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, describe(err))
		}
		if st, err := f.Stat(); err == nil {
			if st.IsDir() {
				f.Close()
				return nil, fmt.Errorf("%s: is a directory", path)
			}
			in.Size = st.Size()
		}
		r = f
		in.closers = append(in.closers, f)
	}
	in.raw = &countingReader{r: r}
	dr, c, err := Decompress(in.raw)
	if err != nil {
		in.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	in.Reader, in.Compression = dr, c
	in.closers = append(in.closers, dr)
	return in, nil
}

// describe turns an open error into its short reason ("no such file").
func describe(err error) error {
	switch {
	case os.IsNotExist(err):
		return errNoSuchFile
	case os.IsPermission(err):
		return errPermission
	}
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

var (
	errNoSuchFile = errorString("no such file")
	errPermission = errorString("permission denied")
)

type errorString string

func (e errorString) Error() string { return string(e) }
