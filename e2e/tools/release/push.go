package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// readLayout returns the one multi-platform index the layout's index.json names.
func readLayout(dir string) (v1.ImageIndex, error) {
	idx, _, err := readLayoutRef(dir)
	return idx, err
}

// readLayoutRef also returns the index's name in the layout (org.opencontainers.image.ref.name).
func readLayoutRef(dir string) (v1.ImageIndex, string, error) {
	root, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, "", fmt.Errorf("%s is not an OCI layout (run make image): %w", dir, err)
	}
	m, err := root.IndexManifest()
	if err != nil {
		return nil, "", err
	}
	if len(m.Manifests) != 1 || !m.Manifests[0].MediaType.IsIndex() {
		return nil, "", fmt.Errorf("%s/index.json: want one image index, has %d entries", dir, len(m.Manifests))
	}
	idx, err := root.ImageIndex(m.Manifests[0].Digest)
	return idx, m.Manifests[0].Annotations[labelPrefix+"ref.name"], err
}

func runPush(args []string) error {
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	dir := fs.String("layout", "", "OCI layout written by build")
	if err := parseFlags(fs, args, "layout"); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("push: want one IMAGE (registry/repository:tag)")
	}
	ref, err := name.ParseReference(fs.Arg(0))
	if err != nil {
		return err
	}
	idx, err := readLayout(*dir)
	if err != nil {
		return err
	}
	if err := push(context.Background(), idx, ref, remote.WithAuthFromKeychain(keychain())); err != nil {
		return err
	}
	d, _ := idx.Digest()
	fmt.Printf("pushed %s@%s\n", ref, d)
	return nil
}

// push writes the index, its images and their blobs under ref, then reads the index back and
// compares digests.
func push(ctx context.Context, idx v1.ImageIndex, ref name.Reference, opts ...remote.Option) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	opts = append(opts, remote.WithContext(ctx))
	if err := remote.WriteIndex(ref, idx, opts...); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	want, err := idx.Digest()
	if err != nil {
		return err
	}
	desc, err := remote.Head(ref, opts...)
	if err != nil {
		return fmt.Errorf("read back %s: %w", ref, err)
	}
	if desc.Digest != want {
		return fmt.Errorf("%s is %s after the push, want %s", ref, desc.Digest, want)
	}
	return nil
}

// keychain: REGISTRY_USERNAME and REGISTRY_PASSWORD when both are set (the release workflow
// passes its token this way), else the default keychain (docker's config.json, as written by
// `docker login`, and credential helpers).
func keychain() authn.Keychain {
	return authn.NewMultiKeychain(envKeychain{}, authn.DefaultKeychain)
}

type envKeychain struct{}

func (envKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	user, pass := os.Getenv("REGISTRY_USERNAME"), os.Getenv("REGISTRY_PASSWORD")
	if user == "" || pass == "" {
		return authn.Anonymous, nil
	}
	return &authn.Basic{Username: user, Password: pass}, nil
}

// runDockerTar writes one platform's image as a `docker load` tarball tagged tag.
func runDockerTar(args []string) error {
	fs := flag.NewFlagSet("docker-tar", flag.ContinueOnError)
	dir := fs.String("layout", "", "OCI layout written by build")
	platform := fs.String("platform", "", "linux/amd64 or linux/arm64")
	tag := fs.String("tag", "", "the image's name in docker (repository:tag)")
	out := fs.String("out", "", "tarball to write")
	if err := parseFlags(fs, args, "layout", "platform", "tag", "out"); err != nil {
		return err
	}
	t, err := name.NewTag(*tag)
	if err != nil {
		return err
	}
	idx, err := readLayout(*dir)
	if err != nil {
		return err
	}
	img, err := platformImage(idx, *platform)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(*out, t, img); err != nil {
		return err
	}
	fmt.Printf("%s: %s for `docker load -i %s`\n", *out, t, *out)
	return nil
}

func platformImage(idx v1.ImageIndex, platform string) (v1.Image, error) {
	p, err := parsePlatform(platform)
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range m.Manifests {
		if d.Platform != nil && d.Platform.OS == p.OS && d.Platform.Architecture == p.Architecture {
			return idx.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("the image has no %s", platform)
}
