package reload

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// secretVolume lays out and updates a directory the way the kubelet's atomic writer does for a
// Secret or ConfigMap volume:
//
//	..2026_11_28_10_00_00.123456789/creds   the payload, in a timestamped directory
//	..data -> ..2026_11_28_10_00_00.123456789
//	creds  -> ..data/creds
//
// An update writes a new timestamped directory, points ..data_tmp at it, renames ..data_tmp over
// ..data (the atomic swap), adds symlinks for new keys, removes the old timestamped directory and
// finally the symlinks of keys no longer in the payload.
type secretVolume struct {
	t    testing.TB
	dir  string
	keys map[string]bool
}

func newSecretVolume(t testing.TB, dir string, payload map[string]string) *secretVolume {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v := &secretVolume{t: t, dir: dir, keys: map[string]bool{}}
	v.update(payload)
	return v
}

// path is where a container sees key.
func (v *secretVolume) path(key string) string { return filepath.Join(v.dir, key) }

// update replaces the whole payload and returns the instant just before the ..data swap.
func (v *secretVolume) update(payload map[string]string) time.Time {
	t := v.t
	t.Helper()
	oldTS, err := os.Readlink(filepath.Join(v.dir, "..data"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}

	tsDir, err := os.MkdirTemp(v.dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for key, content := range payload {
		p := filepath.Join(tsDir, key)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	tmpLink := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		t.Fatal(err)
	}
	swapped := time.Now()
	if err := os.Rename(tmpLink, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}

	for key := range payload {
		if v.keys[key] {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", key), v.path(key)); err != nil {
			t.Fatal(err)
		}
		v.keys[key] = true
	}
	if oldTS != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, oldTS)); err != nil {
			t.Fatal(err)
		}
	}
	for key := range v.keys {
		if _, ok := payload[key]; ok {
			continue
		}
		if err := os.Remove(v.path(key)); err != nil {
			t.Fatal(err)
		}
		delete(v.keys, key)
	}
	return swapped
}

func TestSecretVolumeLayout(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "creds")
	v := newSecretVolume(t, dir, map[string]string{"a": "1", "b": "2"})
	v.update(map[string]string{"a": "3"})

	if got, err := os.Readlink(v.path("a")); err != nil || got != "..data/a" {
		t.Errorf("a links to %q (%v), want ..data/a", got, err)
	}
	if got, err := os.ReadFile(v.path("a")); err != nil || string(got) != "3" {
		t.Errorf("a reads %q (%v), want 3", got, err)
	}
	if _, err := os.Lstat(v.path("b")); !os.IsNotExist(err) {
		t.Errorf("b after removal from the payload: %v, want not exist", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	// ..data, a, and exactly one timestamped directory.
	if len(names) != 3 {
		t.Errorf("directory holds %q, want ..<timestamp>, ..data, a", names)
	}
}
