//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// proc is one process a test started. Its stdout and stderr go to a log file in the test's
// directory; a PID record (PID and binary, the format scripts/e2e.sh stops by) exists while it
// runs, so a test binary killed by its timeout leaves nothing running behind.
type proc struct {
	name    string
	bin     string
	cmd     *exec.Cmd
	logPath string
	pidFile string
	done    chan struct{}
	exitErr error
}

var procSeq atomic.Int64

var (
	testDirsMu sync.Mutex
	testDirs   = map[*testing.T]string{}
)

// testDir returns the directory of this test's files and logs, created on first use (with a
// suffix when -count runs a test again), and kept after a failed run for post-mortems.
func testDir(t *testing.T) string {
	t.Helper()
	testDirsMu.Lock()
	defer testDirsMu.Unlock()
	if dir, ok := testDirs[t]; ok {
		return dir
	}
	base := filepath.Join(suite.workDir, regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "_"))
	dir := base
	for i := 2; ; i++ {
		err := os.Mkdir(dir, 0o755)
		if err == nil {
			break
		}
		if !os.IsExist(err) {
			t.Fatal(err)
		}
		dir = fmt.Sprintf("%s.%d", base, i)
	}
	testDirs[t] = dir
	t.Cleanup(func() {
		testDirsMu.Lock()
		delete(testDirs, t)
		testDirsMu.Unlock()
	})
	return dir
}

// startProc starts bin with args and exactly env (nothing is inherited from the test).
// The process is stopped when the test ends if it still runs.
func startProc(t *testing.T, dir, name, bin string, args, env []string) *proc {
	t.Helper()
	p := &proc{name: name, bin: bin, logPath: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.pidFile = filepath.Join(suite.pidDir, fmt.Sprintf("%d-%s.pid", procSeq.Add(1), name))
	if err := os.WriteFile(p.pidFile, []byte(fmt.Sprintf("%d\n%s\n", p.cmd.Process.Pid, bin)), 0o644); err != nil {
		t.Errorf("PID record: %v", err)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		os.Remove(p.pidFile)
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("last lines of %s (%s):\n%s", name, p.logPath, p.tail(40))
		}
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) signal(sig os.Signal) error {
	if !p.running() {
		return errors.New(p.name + " is not running")
	}
	return p.cmd.Process.Signal(sig)
}

// wait waits up to d for the process to exit and returns its exit code (-1 if killed by a
// signal) and whether it exited.
func (p *proc) wait(d time.Duration) (int, bool) {
	select {
	case <-p.done:
	case <-time.After(d):
		return 0, false
	}
	var ee *exec.ExitError
	switch {
	case p.exitErr == nil:
		return 0, true
	case errors.As(p.exitErr, &ee):
		return ee.ExitCode(), true
	default:
		return -1, true
	}
}

// stop sends TERM, then KILL if the process is still running ten seconds later. It returns the
// exit code; stopping a process that has exited returns its code.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	code, ok := p.wait(10 * time.Second)
	if !ok {
		t.Errorf("%s (pid %d) ignored SIGTERM for 10s; killing it", p.name, p.pid())
		_ = p.cmd.Process.Kill()
		code, _ = p.wait(10 * time.Second)
	}
	return code
}

func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func (p *proc) tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

// freePort returns a loopback TCP port nothing listens on, never the same one twice in a run.
// Ports come from 20000-32767, below Linux's ephemeral range, so that outgoing connections
// (there are many) do not take a picked port, not even while a server restarts on it.
func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 20000 + mrand.IntN(12768)
		if ports[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		ports[port] = true
		return port
	}
	t.Fatal("no free port")
	return 0
}

// eventually polls cond until it returns nil or the deadline passes; then the test fails with
// the last error.
func eventually(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %s: %v", what, d, err)
		}
		<-tick.C
	}
}
