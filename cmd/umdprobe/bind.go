package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/umdkit/umd/pcie"
)

// Exit statuses of bind, unbind and doctor; see doc.go.
const (
	exitRefused     = 4
	exitCheckFailed = 5
	schemaBind      = "umd.pcie.bind/v1"
	schemaDoctor    = "umd.pcie.doctor/v1"
)

// errRefused marks a refusal: nothing was changed (exit status 4).
var errRefused = errors.New("refused")

// refusal reports whether err is one of the reasons pcie refuses to
// bind with nothing changed.
func refusal(err error) bool {
	for _, e := range []error{pcie.ErrNotRoot, pcie.ErrIOMMUOff, pcie.ErrGroupNotViable, pcie.ErrInUse, pcie.ErrNotEndpoint} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// refusedError is a refusal, reported as pcie said it; run maps it to
// exit status 4.
type refusedError struct{ err error }

func (e refusedError) Error() string   { return e.err.Error() + "; nothing was changed" }
func (e refusedError) Unwrap() []error { return []error{errRefused, e.err} }

// targets picks the functions a bind, unbind or doctor acts on: the
// selected ones, without the bridges and ports a selector such as
// card=... also picks (unless only those were picked, so that the
// refusal says why they cannot be bound).
func targets(picked []*pcie.Function) []pcie.BDF {
	var out, bridges []pcie.BDF
	for _, f := range picked {
		if f.Bridge || f.Role == pcie.RoleHostBridge {
			bridges = append(bridges, f.BDF)
		} else {
			out = append(out, f.BDF)
		}
	}
	if len(out) == 0 {
		return bridges
	}
	return out
}

// bindDoc is the JSON document of bind and unbind.
type bindDoc struct {
	Schema string     `json:"schema"`
	Plan   *pcie.Plan `json:"plan"`
	// Error is the refusal or failure, "" on success.
	Error string `json:"error,omitempty"`
	// Refused is true when nothing was changed because of Error.
	Refused bool `json:"refused"`
}

func runBind(w io.Writer, cmd string, picked []*pcie.Function, opt options) error {
	bopts := pcie.BindOptions{
		Driver:    opt.driver,
		DryRun:    opt.dryRun,
		SysfsRoot: opt.sysfs,
		ProcRoot:  opt.proc,
		StateDir:  opt.stateDir,
	}
	var plan *pcie.Plan
	var err error
	if cmd == "bind" {
		plan, err = pcie.Bind(targets(picked), bopts)
	} else {
		plan, err = pcie.Unbind(targets(picked), bopts)
	}
	if err != nil && refusal(err) {
		err = refusedError{err}
	}
	if opt.output == "json" {
		doc := bindDoc{Schema: schemaBind, Plan: plan, Refused: errors.Is(err, errRefused)}
		if err != nil {
			doc.Error = err.Error()
		}
		if werr := writeJSON(w, doc); werr != nil {
			return werr
		}
		return err
	}
	if err != nil {
		return err
	}
	var b strings.Builder
	if opt.dryRun {
		b.WriteString("Dry run: nothing was changed. " + strings.ToUpper(cmd[:1]) + cmd[1:] + " would:\n")
	}
	b.WriteString(indent(plan.String(), opt.dryRun))
	if !opt.dryRun {
		for _, f := range plan.Functions {
			if f.Nothing {
				continue
			}
			now := "no driver"
			if d, err := readDriverNow(opt.sysfs, f.BDF); err == nil && d != "" {
				now = d
			}
			fmt.Fprintf(&b, "%s: now on %s (was %s)\n", f.BDF, now, orNone(f.Driver))
		}
	}
	_, err = io.WriteString(w, b.String())
	return err
}

func indent(s string, on bool) string {
	if !on || s == "" {
		return s
	}
	return "  " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n  ") + "\n"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// readDriverNow reads the function's driver after a bind.
func readDriverNow(sysfs string, b pcie.BDF) (string, error) {
	s, err := pcie.Scan(pcie.Options{SysfsRoot: sysfs, IDs: &pcie.IDs{Source: "none"}})
	if err != nil {
		return "", err
	}
	if f := s.Function(b); f != nil {
		return f.Driver, nil
	}
	return "", nil
}

// doctorDoc is the JSON document of doctor.
type doctorDoc struct {
	Schema  string       `json:"schema"`
	Failed  bool         `json:"failed"`
	Summary string       `json:"summary"`
	Checks  []pcie.Check `json:"checks"`
}

// errChecksFailed makes doctor exit with status 5.
var errChecksFailed = errors.New("some checks failed")

func runDoctor(w io.Writer, fns []pcie.BDF, opt options) error {
	r, err := pcie.Preflight(pcie.PreflightOptions{
		Functions:     fns,
		MemlockNeeded: opt.memlock,
		SysfsRoot:     opt.sysfs,
		ProcRoot:      opt.proc,
		DevRoot:       opt.dev,
	})
	if err != nil {
		return err
	}
	if opt.output == "json" {
		if err := writeJSON(w, doctorDoc{Schema: schemaDoctor, Failed: r.Failed(), Summary: r.Summary(), Checks: r.Checks}); err != nil {
			return err
		}
	} else {
		var b strings.Builder
		width := 0
		names := make([]string, len(r.Checks))
		for i, c := range r.Checks {
			names[i] = c.ID
			if c.Subject != "" {
				names[i] += " " + c.Subject
			}
			width = max(width, len(names[i]))
		}
		for i, c := range r.Checks {
			fmt.Fprintf(&b, "%-4s  %-*s  %s\n", c.Status, width, names[i], c.Detail)
			if c.Remedy != "" {
				fmt.Fprintf(&b, "%-4s  %-*s  fix: %s\n", "", width, "", c.Remedy)
			}
		}
		b.WriteString(r.Summary() + "\n")
		if _, err := io.WriteString(w, b.String()); err != nil {
			return err
		}
	}
	if r.Failed() {
		return errChecksFailed
	}
	return nil
}
