//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// secretVolume is a directory laid out the way the kubelet mounts a Secret:
//
//	..2026_11_28_10_00_00.123456789/service.nk   the content of one version
//	..data -> ..2026_11_28_10_00_00.123456789
//	service.nk -> ..data/service.nk              what the container opens
//
// and updated the way the kubelet updates it: a new timestamped directory, a ..data_tmp
// symlink renamed over ..data (atomic), the old directory removed.
type secretVolume struct {
	dir     string
	current string // the timestamped directory ..data points at
	names   map[string]bool
}

// The Secret keys the project uses.
const (
	keyService = "service.nk" // the service's own login: user nkey seed (SU...)
	keyIssuer  = "issuer.nk"  // auth_callout.issuer account seed(s) (SA...)
	keyXKey    = "xkey.nk"    // auth_callout.xkey curve seed (SX...)
	keySystem  = "system.nk"  // a system account user's seed (SU...): live revocation
)

func newSecretVolume(t *testing.T, dir string, files map[string][]byte) *secretVolume {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v := &secretVolume{dir: dir, names: map[string]bool{}}
	v.update(t, files)
	return v
}

// path is the file the service is pointed at, e.g. NATS_CREDS_FILE.
func (v *secretVolume) path(name string) string { return filepath.Join(v.dir, name) }

// update replaces the whole content, as a Secret update does.
func (v *secretVolume) update(t *testing.T, files map[string][]byte) {
	t.Helper()
	ts := filepath.Join(v.dir, ".."+time.Now().UTC().Format("2006_01_02_15_04_05.000000000"))
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(ts, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	// Keys new in this version get their user-visible symlink; removed keys lose it.
	for name := range files {
		if !v.names[name] {
			if err := os.Symlink(filepath.Join("..data", name), v.path(name)); err != nil {
				t.Fatal(err)
			}
			v.names[name] = true
		}
	}
	for name := range v.names {
		if _, ok := files[name]; !ok {
			if err := os.Remove(v.path(name)); err != nil {
				t.Fatal(err)
			}
			delete(v.names, name)
		}
	}
	if v.current != "" {
		if err := os.RemoveAll(v.current); err != nil {
			t.Fatal(fmt.Errorf("remove the old version: %w", err))
		}
	}
	v.current = ts
}
