package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"debug/elf"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type checkOptions struct {
	dir, version, commit, revision, source string
	budget                                 int64
	platforms                              string
	bins                                   binaries
}

// runCheck checks the layout that build wrote: the index, every platform's config and files,
// the size budget, the binary taken out of the image (run with --version on this machine's
// platform), and a push of the whole index to a registry on 127.0.0.1 read back by digest.
// Every failure is listed; the exit status is 1 if there is any.
func runCheck(args []string) error {
	o := checkOptions{bins: binaries{}}
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.StringVar(&o.dir, "layout", "", "OCI layout written by build")
	fs.StringVar(&o.version, "version", "", "expected version (label, ref name, --version)")
	fs.StringVar(&o.commit, "commit", "", "expected commit as --version prints it")
	fs.StringVar(&o.revision, "revision", "", "expected full commit hash (revision label)")
	fs.StringVar(&o.source, "source", "", "expected source label")
	fs.Int64Var(&o.budget, "budget", 0, "largest compressed size of one platform's image, bytes")
	fs.StringVar(&o.platforms, "platforms", "linux/amd64,linux/arm64", "platforms the index must have, exactly")
	fs.Var(o.bins, "binary", "os/arch=FILE: the image's entrypoint must be this file (repeatable)")
	if err := parseFlags(fs, args, "layout", "version", "commit", "revision", "source", "budget"); err != nil {
		return err
	}
	c := &checker{}
	c.run(o)
	if len(c.failures) > 0 {
		for _, f := range c.failures {
			fmt.Fprintln(os.Stderr, "FAIL:", f)
		}
		return fmt.Errorf("image check: %d failed", len(c.failures))
	}
	fmt.Println("image check passed")
	return nil
}

type checker struct{ failures []string }

func (c *checker) fail(format string, args ...any) {
	c.failures = append(c.failures, fmt.Sprintf(format, args...))
}

func (c *checker) run(o checkOptions) {
	idx, refName, err := readLayoutRef(o.dir)
	if err != nil {
		c.fail("%v", err)
		return
	}
	if refName != o.version {
		c.fail("index.json names the image %q (org.opencontainers.image.ref.name), want %s", refName, o.version)
	}
	if mt, _ := idx.MediaType(); mt != types.OCIImageIndex {
		c.fail("index media type %s, want %s", mt, types.OCIImageIndex)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		c.fail("index: %v", err)
		return
	}
	wantLabels := map[string]string{
		labelPrefix + "version":  o.version,
		labelPrefix + "revision": o.revision,
		labelPrefix + "source":   o.source,
	}
	c.labels("index annotations", m.Annotations, wantLabels)

	var got []string
	for _, d := range m.Manifests {
		if d.Platform == nil {
			c.fail("index entry %s has no platform", d.Digest)
			continue
		}
		platform := d.Platform.OS + "/" + d.Platform.Architecture
		got = append(got, platform)
		img, err := idx.Image(d.Digest)
		if err != nil {
			c.fail("%s: %v", platform, err)
			continue
		}
		c.image(o, platform, *d.Platform, img, wantLabels)
	}
	slices.Sort(got)
	want := strings.Split(o.platforms, ",")
	slices.Sort(want)
	if !slices.Equal(got, want) {
		c.fail("platforms %v, want %v", got, want)
	}

	c.pushRoundTrip(idx, o.version)
}

func (c *checker) labels(what string, got, want map[string]string) {
	for k, v := range want {
		if got[k] != v {
			c.fail("%s: %s = %q, want %q", what, k, got[k], v)
		}
	}
	for _, k := range []string{"licenses", "created", "title"} {
		if got[labelPrefix+k] == "" {
			c.fail("%s: %s%s is missing (set IMAGE_LICENSES in the Makefile to the LICENSE's SPDX identifier)", what, labelPrefix, k)
		}
	}
}

// image checks one platform's image.
func (c *checker) image(o checkOptions, platform string, p v1.Platform, img v1.Image, wantLabels map[string]string) {
	fail := func(format string, args ...any) { c.fail(platform+": "+format, args...) }
	cf, err := img.ConfigFile()
	if err != nil {
		fail("config: %v", err)
		return
	}
	if cf.OS != p.OS || cf.Architecture != p.Architecture || cf.Variant != p.Variant {
		fail("config says %s/%s/%s, the index %s/%s/%s", cf.OS, cf.Architecture, cf.Variant, p.OS, p.Architecture, p.Variant)
	}
	cfg := cf.Config
	if cfg.User != imageUser {
		fail("user %q, want %s (nonroot)", cfg.User, imageUser)
	}
	if !reflect.DeepEqual(cfg.Entrypoint, []string{entrypoint}) || len(cfg.Cmd) > 0 {
		fail("entrypoint %q cmd %q, want [%s] and no cmd", cfg.Entrypoint, cfg.Cmd, entrypoint)
	}
	if _, ok := cfg.ExposedPorts[exposedPort]; !ok {
		fail("port %s not exposed", exposedPort)
	}
	c.labels(platform+" labels", cfg.Labels, wantLabels)
	if m, err := img.Manifest(); err == nil {
		c.labels(platform+" manifest annotations", m.Annotations, wantLabels)
	}

	// Size: what a node pulls for this platform.
	layers, err := img.Layers()
	if err != nil {
		fail("layers: %v", err)
		return
	}
	var compressed, uncompressed int64
	files := map[string]*tar.Header{}
	contents := map[string][]byte{}
	for i, l := range layers {
		if mt, _ := l.MediaType(); mt != types.OCILayer {
			fail("layer %d media type %s, want %s", i, mt, types.OCILayer)
		}
		size, _ := l.Size()
		compressed += size
		rc, err := l.Uncompressed()
		if err != nil {
			fail("layer %d: %v", i, err)
			return
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				fail("layer %d: %v", i, err)
				break
			}
			name := "/" + strings.TrimSuffix(strings.TrimPrefix(path.Clean("/"+h.Name), "/"), "/")
			files[name] = h
			uncompressed += h.Size
			if h.Typeflag == tar.TypeReg && (name == entrypoint || name == "/"+caFile || strings.HasPrefix(name, "/etc/")) {
				b, _ := io.ReadAll(tr)
				contents[name] = b
			}
		}
		_ = rc.Close()
	}
	raw, _ := img.RawManifest()
	cfgRaw, _ := img.RawConfigFile()
	total := compressed + int64(len(raw)) + int64(len(cfgRaw))
	fmt.Printf("%s: %d layers, %.1f MiB compressed (budget %.1f MiB), %.1f MiB on disk\n",
		platform, len(layers), mib(total), mib(o.budget), mib(uncompressed))
	if total > o.budget {
		fail("%d bytes compressed, over the budget of %d (IMAGE_SIZE_BUDGET)", total, o.budget)
	}

	c.files(fail, files, contents)
	bin := contents[entrypoint]
	if len(bin) == 0 {
		return
	}
	c.binary(fail, p, bin)
	if want, ok := o.bins[platform]; ok {
		data, err := os.ReadFile(want)
		if err != nil {
			fail("%v", err)
		} else if sha256.Sum256(data) != sha256.Sum256(bin) {
			fail("the entrypoint is not %s (sha256 %s)", want, sum(data))
		}
	}
	if platform == runtime.GOOS+"/"+runtime.GOARCH {
		c.runVersion(fail, bin, o)
	}
}

// files: no shell and no other program, the nonroot user, the CA bundle.
func (c *checker) files(fail func(string, ...any), files map[string]*tar.Header, contents map[string][]byte) {
	for name, h := range files {
		switch {
		case h.Typeflag == tar.TypeSymlink || h.Typeflag == tar.TypeLink:
			fail("%s is a link (%s): the image has none", name, h.Linkname)
		case h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeDir:
			fail("%s has tar type %c", name, h.Typeflag)
		case h.Mode&0o6000 != 0:
			fail("%s is setuid/setgid", name)
		case h.Typeflag == tar.TypeReg && h.Mode&0o111 != 0 && name != entrypoint:
			fail("%s is executable: the entrypoint is the only program in the image", name)
		case regexp.MustCompile(`(^|/)(sh|bash|ash|dash|zsh|busybox|toybox|nologin)$`).MatchString(name):
			fail("%s: no shell in the image", name)
		}
	}
	h := files[entrypoint]
	if h == nil || h.Typeflag != tar.TypeReg {
		fail("no %s", entrypoint)
	} else if h.Mode&0o755 != 0o755 || h.Uid != 0 {
		fail("%s mode %o uid %d, want 0755 owned by root (the service cannot change it)", entrypoint, h.Mode, h.Uid)
	}
	if !strings.Contains(string(contents["/etc/passwd"]), "nonroot:x:65532:65532:") ||
		!strings.Contains(string(contents["/etc/group"]), "nonroot:x:65532:") {
		fail("/etc/passwd or /etc/group lacks nonroot 65532")
	}
	if h := files["/tmp"]; h == nil || h.Mode&0o1777 != 0o1777 {
		fail("/tmp missing or not 1777")
	}
	pool, n := x509.NewCertPool(), 0
	rest := contents["/"+caFile]
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			fail("%s: %v", caFile, err)
			continue
		}
		pool.AddCert(cert)
		n++
	}
	if n < 100 || len(bytes.TrimSpace(rest)) > 0 {
		fail("/%s: %d certificates (want the Mozilla roots, over 100) and %d bytes that are not PEM", caFile, n, len(rest))
	}
}

// binary: an ELF for the platform, statically linked, no interpreter.
func (c *checker) binary(fail func(string, ...any), p v1.Platform, bin []byte) {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		fail("%s is not an ELF binary: %v", entrypoint, err)
		return
	}
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[p.Architecture]
	if f.Machine != want {
		fail("%s is built for %s, want %s", entrypoint, f.Machine, want)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
			fail("%s is dynamically linked: the image has no libc", entrypoint)
			break
		}
	}
}

// runVersion takes the binary out of the image and runs it with --version.
func (c *checker) runVersion(fail func(string, ...any), bin []byte, o checkOptions) {
	dir, err := os.MkdirTemp("", "image-check")
	if err != nil {
		fail("%v", err)
		return
	}
	defer os.RemoveAll(dir)
	exe := filepath.Join(dir, path.Base(entrypoint))
	if err := os.WriteFile(exe, bin, 0o700); err != nil { //nolint:gosec // an executable, run right below
		fail("%v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "--version") //nolint:gosec // the image's entrypoint, the binary under test
	cmd.Env = []string{}                              // as in the image: no environment but what the pod sets
	out, err := cmd.CombinedOutput()
	got := strings.TrimSpace(string(out))
	fmt.Printf("%s --version (taken out of the image): %s\n", entrypoint, got)
	want := fmt.Sprintf("nats-k8s-oidc-callout %s (commit %s, go", o.version, o.commit)
	if err != nil || !strings.HasPrefix(got, want) || strings.Count(got, "\n") > 0 {
		fail("%s --version: %v %q, want one line starting %q", entrypoint, err, got, want)
	}
}

// pushRoundTrip pushes the index to an in-memory registry on 127.0.0.1 with the push code of
// `make image-push`, then pulls every platform's image back by digest.
func (c *checker) pushRoundTrip(idx v1.ImageIndex, version string) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ref, err := name.ParseReference(host+"/nats-k8s-oidc-callout:"+version, name.Insecure)
	if err != nil {
		c.fail("push check: %v", err)
		return
	}
	if err := push(context.Background(), idx, ref); err != nil {
		c.fail("push check: %v", err)
		return
	}
	pulled, err := remote.Index(ref)
	if err != nil {
		c.fail("push check: pull: %v", err)
		return
	}
	m, _ := idx.IndexManifest()
	for _, d := range m.Manifests {
		img, err := pulled.Image(d.Digest)
		if err != nil {
			c.fail("push check: %s: %v", d.Digest, err)
			continue
		}
		layers, _ := img.Layers()
		for _, l := range layers {
			// Reading a layer checks its digest.
			rc, err := l.Compressed()
			if err == nil {
				_, err = io.Copy(io.Discard, rc)
				_ = rc.Close()
			}
			if err != nil {
				c.fail("push check: %s layer: %v", d.Platform.Architecture, err)
			}
		}
	}
	fmt.Printf("pushed to and pulled from a registry on %s: %d platforms\n", host, len(m.Manifests))
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
