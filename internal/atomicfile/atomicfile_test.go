package atomicfile_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/atomicfile"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret.yaml")
	for _, tt := range []struct {
		data string
		mode fs.FileMode
	}{
		{"first\n", 0o600},
		{"second, replacing the first\n", 0o644}, // the mode given wins over the old file's
	} {
		if err := atomicfile.WriteFile(path, []byte(tt.data), tt.mode); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.data {
			t.Errorf("content = %q, want %q", got, tt.data)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != tt.mode {
			t.Errorf("mode = %v, want %v", st.Mode().Perm(), tt.mode)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("dir holds %d entries, want only the file (no temporary leftovers)", len(entries))
	}
}

// TestWriteFileSwapsTheFile checks the old content is replaced, not overwritten in place: a
// reader holding the old file open keeps reading the old content.
func TestWriteFileSwapsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds")
	if err := atomicfile.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := atomicfile.WriteFile(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := f.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "old" {
		t.Errorf("the open file reads %q, want the old content", buf[:n])
	}
}

func TestWriteFileMissingDir(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "missing", "file")
	if err := atomicfile.WriteFile(path, []byte("x"), 0o600); err == nil {
		t.Fatal("WriteFile into a missing directory succeeded")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("a failed write left %d entries behind", len(entries))
	}
}
