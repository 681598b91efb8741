package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// What the image is: checked again by `check`.
const (
	entrypoint  = "/nats-k8s-oidc-callout"
	imageUser   = "65532:65532"
	caFile      = "etc/ssl/certs/ca-certificates.crt"
	exposedPort = "8080/tcp"
	labelPrefix = "org.opencontainers.image."
)

// The users of /etc/passwd: root owns the files, the service runs as nonroot. No login shell
// exists in the image; /sbin/nologin is only the conventional name.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
)

type buildOptions struct {
	out, version, revision, source, licenses, title, description string
	created                                                      int64
	bins                                                         binaries
}

func runBuild(args []string) error {
	o := buildOptions{bins: binaries{}}
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.StringVar(&o.out, "out", "", "OCI layout directory to write (replaced)")
	fs.Var(o.bins, "binary", "os/arch=FILE: the static binary for a platform (repeat per platform)")
	fs.StringVar(&o.version, "version", "", "version label, and the layout's ref name")
	fs.StringVar(&o.revision, "revision", "", "full commit hash (revision label)")
	fs.StringVar(&o.source, "source", "", "source repository URL (source label)")
	fs.StringVar(&o.licenses, "licenses", "", "SPDX license expression (licenses label)")
	fs.StringVar(&o.title, "title", "nats-k8s-oidc-callout", "title label")
	fs.StringVar(&o.description, "description", "", "description label")
	fs.Int64Var(&o.created, "created", 0, "creation time, Unix seconds (the commit's time keeps builds reproducible)")
	if err := parseFlags(fs, args, "out", "version", "revision", "source", "licenses", "created"); err != nil {
		return err
	}
	if len(o.bins) == 0 {
		return fmt.Errorf("build: no -binary given")
	}
	idx, err := buildIndex(o)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(o.out); err != nil {
		return err
	}
	p, err := layout.Write(o.out, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{labelPrefix + "ref.name": o.version})); err != nil {
		return err
	}
	d, _ := idx.Digest()
	fmt.Printf("image %s (%s) written to %s as an OCI layout\n", d, strings.Join(o.bins.platforms(), ", "), o.out)
	return nil
}

func (o buildOptions) labels() map[string]string {
	l := map[string]string{
		"title":    o.title,
		"version":  o.version,
		"revision": o.revision,
		"source":   o.source,
		"url":      o.source,
		"licenses": o.licenses,
		"created":  time.Unix(o.created, 0).UTC().Format(time.RFC3339),
	}
	if o.description != "" {
		l["description"] = o.description
	}
	out := map[string]string{}
	for k, v := range l {
		out[labelPrefix+k] = v
	}
	return out
}

// buildIndex makes one image per platform and the index over them.
func buildIndex(o buildOptions) (v1.ImageIndex, error) {
	created := v1.Time{Time: time.Unix(o.created, 0).UTC()}
	base, err := baseLayer(created.Time)
	if err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, platform := range o.bins.platforms() {
		p, _ := parsePlatform(platform)
		bin, err := binaryLayer(o.bins[platform], created.Time)
		if err != nil {
			return nil, err
		}
		img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		img, err = mutate.Append(img,
			mutate.Addendum{Layer: base, History: v1.History{Created: created, CreatedBy: "release-tool: /etc/passwd, /etc/group, CA certificates, /tmp, /home/nonroot", Comment: "base"}},
			mutate.Addendum{Layer: bin, History: v1.History{Created: created, CreatedBy: "release-tool: " + entrypoint + " (" + platform + ")", Comment: "service"}},
		)
		if err != nil {
			return nil, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
		cf.Created = created
		cf.Author = ""
		cf.Config = v1.Config{
			User:         imageUser,
			Entrypoint:   []string{entrypoint},
			WorkingDir:   "/",
			ExposedPorts: map[string]struct{}{exposedPort: {}},
			Labels:       o.labels(),
		}
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			return nil, err
		}
		img = mutate.Annotations(img, o.labels()).(v1.Image)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	return mutate.Annotations(idx, o.labels()).(v1.ImageIndex), nil
}

func parsePlatform(s string) (v1.Platform, error) {
	osName, arch, ok := strings.Cut(s, "/")
	if !ok || osName != "linux" || (arch != "amd64" && arch != "arm64") {
		return v1.Platform{}, fmt.Errorf("platform %q: want linux/amd64 or linux/arm64", s)
	}
	p := v1.Platform{OS: osName, Architecture: arch}
	if arch == "arm64" {
		p.Variant = "v8"
	}
	return p, nil
}

// tarFile is one entry of a layer.
type tarFile struct {
	name     string // without the leading slash; directories end in /
	mode     int64
	uid, gid int
	data     []byte
}

// layer makes a gzip-compressed OCI layer of files, in the order given, every time stamp
// mtime: the same input gives the same digest.
func layer(files []tarFile, mtime time.Time) (v1.Layer, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, f := range files {
		h := &tar.Header{
			Name:    f.name,
			Mode:    f.mode,
			Uid:     f.uid,
			Gid:     f.gid,
			ModTime: mtime,
			Format:  tar.FormatUSTAR,
		}
		if strings.HasSuffix(f.name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := b.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.BestCompression), tarball.WithCompressedCaching)
}

func baseLayer(mtime time.Time) (v1.Layer, error) {
	certs, err := caBundle()
	if err != nil {
		return nil, err
	}
	return layer([]tarFile{
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: caFile, mode: 0o644, data: certs},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o700, uid: 65532, gid: 65532},
		{name: "tmp/", mode: 0o1777},
	}, mtime)
}

func binaryLayer(file string, mtime time.Time) (v1.Layer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return layer([]tarFile{{name: path.Base(entrypoint), mode: 0o755, data: data}}, mtime)
}

// caBundle is the PEM bundle the image carries at /etc/ssl/certs/ca-certificates.crt, where
// Go's crypto/x509 looks on Linux: the Mozilla NSS roots trusted for TLS servers, as
// golang.org/x/crypto/x509roots/fallback publishes them (the version go.sum pins, so every
// machine builds the same bundle). Roots that NSS trusts only with an extra constraint (a
// "distrust after" date) are left out: a PEM file cannot carry the constraint, and leaving
// them in would trust them without it.
func caBundle() ([]byte, error) {
	var b bytes.Buffer
	n := 0
	for r := range bundle.Roots() {
		if r.Constraint != nil {
			continue
		}
		if err := pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate}); err != nil {
			return nil, err
		}
		n++
	}
	if n < 50 {
		return nil, fmt.Errorf("only %d CA certificates in the bundle", n)
	}
	return b.Bytes(), nil
}
