package qemu

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode"
)

// GuestBuildTag marks test files that run only in the guest.
const GuestBuildTag = "guest"

// A TestPackage is a package with guest tests, compiled for the guest.
type TestPackage struct {
	ImportPath string
	Dir        string // source directory on the host
	Binary     string // compiled test binary on the host
	// Tests are the test functions declared in the package's guest
	// files. Only they run in the guest: the package's other tests are
	// host tests, and `go test` has already run them there.
	Tests []string
}

// guestName is the binary's name in the guest and the package's working
// directory there (/umd/src/NAME, holding its testdata).
func (p TestPackage) guestName() string {
	return strings.ReplaceAll(p.ImportPath, "/", "_")
}

// FindGuestTests lists the packages matching patterns that have at least
// one test file constrained to the guest build tag.
func FindGuestTests(moduleDir string, patterns []string) ([]TestPackage, error) {
	if len(patterns) == 0 {
		patterns = []string{"./..."}
	}
	args := append([]string{"list", "-tags", GuestBuildTag, "-json=ImportPath,Dir,TestGoFiles,XTestGoFiles"}, patterns...)
	cmd := exec.Command("go", args...)
	cmd.Dir = moduleDir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w: %s", err, stderr.String())
	}
	var pkgs []TestPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p struct {
			ImportPath, Dir           string
			TestGoFiles, XTestGoFiles []string
		}
		if err := dec.Decode(&p); err != nil {
			return nil, fmt.Errorf("go list output: %w", err)
		}
		tp := TestPackage{ImportPath: p.ImportPath, Dir: p.Dir}
		guestFiles := 0
		for _, f := range append(p.TestGoFiles, p.XTestGoFiles...) {
			path := filepath.Join(p.Dir, f)
			ok, err := hasGuestConstraint(path)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			guestFiles++
			names, err := testFunctions(path)
			if err != nil {
				return nil, err
			}
			tp.Tests = append(tp.Tests, names...)
		}
		if guestFiles > 0 {
			sort.Strings(tp.Tests)
			pkgs = append(pkgs, tp)
		}
	}
	return pkgs, nil
}

// testFunctions returns the names of the Test functions a file declares.
func testFunctions(path string) ([]string, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Recv != nil || fn.Type.Params.NumFields() != 1 {
			continue
		}
		name := fn.Name.Name
		if rest, ok := strings.CutPrefix(name, "Test"); ok && name != "TestMain" && (rest == "" || !unicode.IsLower(rune(rest[0]))) {
			names = append(names, name)
		}
	}
	return names, nil
}

// FilterTests keeps the tests whose names match the regular expression
// run (as `go test -run` matches top-level tests); an empty run keeps all.
func FilterTests(pkgs []TestPackage, run string) ([]TestPackage, error) {
	if run == "" {
		return pkgs, nil
	}
	top, _, _ := strings.Cut(run, "/")
	re, err := regexp.Compile(top)
	if err != nil {
		return nil, fmt.Errorf("-run %q: %w", run, err)
	}
	var out []TestPackage
	for _, p := range pkgs {
		var keep []string
		for _, t := range p.Tests {
			if re.MatchString(t) {
				keep = append(keep, t)
			}
		}
		if len(keep) > 0 {
			p.Tests = keep
			out = append(out, p)
		}
	}
	return out, nil
}

var (
	buildLine = regexp.MustCompile(`^//go:build\s+(.*)$`)
	buildTag  = regexp.MustCompile(`[A-Za-z0-9_.]+`)
)

// hasGuestConstraint reports whether the file's //go:build line names the
// guest tag.
func hasGuestConstraint(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := buildLine.FindStringSubmatch(line); m != nil {
			for _, w := range buildTag.FindAllString(m[1], -1) {
				if w == GuestBuildTag {
					return true, nil
				}
			}
			return false, nil
		}
		if strings.HasPrefix(line, "package ") {
			break
		}
	}
	return false, sc.Err()
}

// CompileGuestTests builds each package's test binary (with the guest tag,
// static, stripped to keep the initramfs small) into dir. Packages whose
// last path elements differ are built by one go command, which links them
// in parallel; the rest one by one.
func CompileGuestTests(moduleDir, dir string, pkgs []TestPackage) error {
	byBase := map[string]int{}
	for _, p := range pkgs {
		byBase[path.Base(p.ImportPath)]++
	}
	var together []string
	for i := range pkgs {
		pkgs[i].Binary = filepath.Join(dir, pkgs[i].guestName()+".test")
		if byBase[path.Base(pkgs[i].ImportPath)] == 1 {
			together = append(together, pkgs[i].ImportPath)
			continue
		}
		if err := goCmd(moduleDir, "test", "-c", "-tags", GuestBuildTag, "-ldflags=-s -w", "-o", pkgs[i].Binary, pkgs[i].ImportPath); err != nil {
			return err
		}
	}
	if len(together) == 0 {
		return nil
	}
	tmp := filepath.Join(dir, "together")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	args := append([]string{"test", "-c", "-tags", GuestBuildTag, "-ldflags=-s -w", "-o", tmp + string(filepath.Separator)}, together...)
	if err := goCmd(moduleDir, args...); err != nil {
		return err
	}
	for _, p := range pkgs {
		if byBase[path.Base(p.ImportPath)] != 1 {
			continue
		}
		if err := os.Rename(filepath.Join(tmp, path.Base(p.ImportPath)+".test"), p.Binary); err != nil {
			return fmt.Errorf("collecting the test binary of %s: %w", p.ImportPath, err)
		}
	}
	return os.Remove(tmp)
}

// GuestTestScript returns the guest script that runs each package's guest
// tests from its own directory (with its testdata), framed by markers that
// TestReporter reads. A non-empty sub is a subtest pattern (what follows
// the first "/" of go test's -run).
func GuestTestScript(pkgs []TestPackage, sub string) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\nrc=0\n")
	for _, p := range pkgs {
		n := p.guestName()
		fmt.Fprintf(&b, "echo '%s %s'\n", markerStart, p.ImportPath)
		fmt.Fprintf(&b, "mkdir -p /umd/src/%s && cd /umd/src/%s\n", n, n)
		run := "^(" + strings.Join(p.Tests, "|") + ")$"
		if sub != "" {
			run += "/" + sub
		}
		fmt.Fprintf(&b, "/umd/tests/%s.test %s\n", n, ShellJoin([]string{"-test.v", "-test.run", run}))
		fmt.Fprintf(&b, "st=$?; [ $st -eq 0 ] || rc=1\necho; echo \"%s %s $st\"\n", markerEnd, p.ImportPath)
	}
	b.WriteString("exit $rc\n")
	return b.String()
}

// GuestTestFiles returns the files a test run needs in the guest: binaries
// and each package's testdata.
func GuestTestFiles(pkgs []TestPackage) map[string]string {
	files := map[string]string{}
	for _, p := range pkgs {
		files["umd/tests/"+p.guestName()+".test"] = p.Binary
		td := filepath.Join(p.Dir, "testdata")
		if st, err := os.Stat(td); err == nil && st.IsDir() {
			files["umd/src/"+p.guestName()+"/testdata"] = td
		}
	}
	return files
}

const (
	markerStart = "=== UMD-PACKAGE"
	markerEnd   = "=== UMD-PACKAGE-END"
)

// A TestReporter turns the guest's test output into `go test`-style
// lines: a package's output is shown when it fails (or always in verbose
// mode), followed by "ok"/"FAIL" and the package.
type TestReporter struct {
	Out     io.Writer
	Verbose bool
	Label   string // appended to each package line, e.g. "[guest 6.12 cards]"

	Passed, Failed, Skipped int
	FailedPackages          []string

	line    []byte
	pkg     string
	buf     bytes.Buffer
	started time.Time
	pkgFail bool
}

var resultLine = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): `)

// Write takes guest output as it comes.
func (r *TestReporter) Write(p []byte) (int, error) {
	for _, c := range p {
		if c != '\n' {
			r.line = append(r.line, c)
			continue
		}
		r.handle(string(r.line))
		r.line = r.line[:0]
	}
	return len(p), nil
}

// Flush handles a last line without a newline and reports a package whose
// end marker never came.
func (r *TestReporter) Flush() {
	if len(r.line) > 0 {
		r.handle(string(r.line))
		r.line = r.line[:0]
	}
	if r.pkg != "" {
		r.buf.WriteString("(the guest stopped before this package's tests ended)\n")
		r.finish("incomplete")
	}
}

func (r *TestReporter) handle(line string) {
	if rest, ok := strings.CutPrefix(line, markerEnd+" "); ok {
		f := strings.Fields(rest)
		status := "1"
		if len(f) > 1 {
			status = f[1]
		}
		r.finish(status)
		return
	}
	if rest, ok := strings.CutPrefix(line, markerStart+" "); ok {
		r.pkg = strings.TrimSpace(rest)
		r.buf.Reset()
		r.started = time.Now()
		r.pkgFail = false
		return
	}
	if r.pkg == "" {
		fmt.Fprintln(r.Out, line)
		return
	}
	if m := resultLine.FindStringSubmatch(line); m != nil {
		switch m[1] {
		case "PASS":
			r.Passed++
		case "FAIL":
			r.Failed++
			r.pkgFail = true
		case "SKIP":
			r.Skipped++
		}
	}
	if r.Verbose {
		fmt.Fprintln(r.Out, line)
	} else {
		r.buf.WriteString(line + "\n")
	}
}

func (r *TestReporter) finish(status string) {
	failed := status != "0" || r.pkgFail
	if failed && !r.Verbose {
		r.Out.Write(r.buf.Bytes())
	}
	verdict := "ok  "
	if failed {
		verdict = "FAIL"
		r.FailedPackages = append(r.FailedPackages, r.pkg)
		if status != "0" && !r.pkgFail {
			// The binary failed without a failing test: a panic, a
			// crash, or a failed TestMain.
			r.Failed++
		}
	}
	fmt.Fprintf(r.Out, "%s\t%s\t%.3fs\t%s\n", verdict, r.pkg, time.Since(r.started).Seconds(), r.Label)
	r.pkg = ""
	r.buf.Reset()
}
