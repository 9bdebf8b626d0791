package dra

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/umdkit/umd/broker"
)

// ParametersAPIVersion and ParametersKind identify umd's opaque
// configuration in a DeviceClass's or a claim's
// spec.devices.config[].opaque.parameters (driver DriverName).
const (
	ParametersAPIVersion = "umd.umdkit.io/v1alpha1"
	ParametersKind       = "UmdClaimParameters"
)

// Completion modes (Parameters.Completion).
const (
	CompletionPoll = "poll" // the client polls its completion queues
	CompletionIRQ  = "irq"  // each queue pair has an MSI-X vector and eventfd
)

// Modes (Parameters.Mode): how the container reaches the device.
const (
	// ModeMediated: a broker session whose every command the broker checks.
	ModeMediated = broker.ModeMediated
	// ModeTrusted: a broker session whose queue pairs the client drives
	// itself (it gets the VFIO device descriptor; trust it like the broker).
	ModeTrusted = broker.ModeTrusted
	// ModeVF: the device is an SR-IOV virtual function, which the broker
	// leases the client whole (a controller and IOMMU group of its own).
	// Sessions (mediated, trusted) are only on physical functions.
	ModeVF = "vf"
	// ModeExclusive: no broker; the container gets the device's
	// /dev/vfio nodes and opens it itself.
	ModeExclusive = "exclusive"
)

// Limits of Parameters: the broker's per session.
const (
	MinQueuePairs = 1
	MaxQueuePairs = broker.MaxQueuesPerSession
	MinQueueDepth = broker.MinQueueDepth
	MaxQueueDepth = broker.MaxQueueDepth
	MinPoolBytes  = 4096
	MaxPoolBytes  = broker.MaxPoolBytes
)

// Defaults of Parameters.
const (
	DefaultQueuePairs = 1
	DefaultQueueDepth = 64
	DefaultPoolBytes  = 4 << 20
	DefaultCompletion = CompletionIRQ
	DefaultMode       = ModeMediated
)

// Parameters is what a claim asks of each device it gets, after defaults.
type Parameters struct {
	QueuePairs int    `json:"queuePairs"`
	QueueDepth int    `json:"queueDepth"`
	PoolBytes  int64  `json:"poolBytes"`
	Completion string `json:"completion"`
	Mode       string `json:"mode"`
}

// DefaultParameters returns the parameters of a claim that sets none.
func DefaultParameters() Parameters {
	return Parameters{
		QueuePairs: DefaultQueuePairs,
		QueueDepth: DefaultQueueDepth,
		PoolBytes:  DefaultPoolBytes,
		Completion: DefaultCompletion,
		Mode:       DefaultMode,
	}
}

// claimParameters is the wire form: unset fields are nil so that a
// later configuration overrides only what it sets.
type claimParameters struct {
	APIVersion string  `json:"apiVersion"`
	Kind       string  `json:"kind"`
	QueuePairs *int    `json:"queuePairs,omitempty"`
	QueueDepth *int    `json:"queueDepth,omitempty"`
	PoolBytes  *int64  `json:"poolBytes,omitempty"`
	Completion *string `json:"completion,omitempty"`
	Mode       *string `json:"mode,omitempty"`
}

// ErrInvalidParameters is matched by every error of ParseParameters and
// Parameters.Validate.
var ErrInvalidParameters = errors.New("invalid umd claim parameters")

// A FieldError says which field of the parameters is wrong and what it
// may be.
type FieldError struct {
	Field   string // JSON name: "queuePairs"
	Value   string // as given
	Allowed string // "1 to 64", `"poll" or "irq"`
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: %s is not allowed, must be %s", e.Field, e.Value, e.Allowed)
}

// Unwrap makes a FieldError match ErrInvalidParameters.
func (e *FieldError) Unwrap() error { return ErrInvalidParameters }

// Validate checks every field and returns all that are wrong, joined,
// each a *FieldError.
func (p Parameters) Validate() error {
	var errs []error
	rangeCheck := func(field string, v, lo, hi int64) {
		if v < lo || v > hi {
			errs = append(errs, &FieldError{Field: field, Value: fmt.Sprint(v), Allowed: fmt.Sprintf("%d to %d", lo, hi)})
		}
	}
	oneOf := func(field, v string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		q := make([]string, len(allowed))
		for i, a := range allowed {
			q[i] = fmt.Sprintf("%q", a)
		}
		errs = append(errs, &FieldError{Field: field, Value: fmt.Sprintf("%q", v), Allowed: "one of " + strings.Join(q, ", ")})
	}
	rangeCheck("queuePairs", int64(p.QueuePairs), MinQueuePairs, MaxQueuePairs)
	rangeCheck("queueDepth", int64(p.QueueDepth), MinQueueDepth, MaxQueueDepth)
	rangeCheck("poolBytes", p.PoolBytes, MinPoolBytes, MaxPoolBytes)
	if p.PoolBytes%4096 != 0 && p.PoolBytes >= MinPoolBytes && p.PoolBytes <= MaxPoolBytes {
		errs = append(errs, &FieldError{Field: "poolBytes", Value: fmt.Sprint(p.PoolBytes), Allowed: "a multiple of 4096"})
	}
	oneOf("completion", p.Completion, CompletionPoll, CompletionIRQ)
	oneOf("mode", p.Mode, ModeMediated, ModeTrusted, ModeVF, ModeExclusive)
	return errors.Join(errs...)
}

// ParseParameters starts from DefaultParameters, applies each opaque
// configuration in order (a DeviceClass's first, then the claim's, as the
// kubelet lists them; a later one overrides only the fields it sets), and
// validates the result. Each configuration must be a JSON object with
// apiVersion ParametersAPIVersion and kind ParametersKind and no unknown
// fields; errors say which configuration (0-based) and field is wrong.
func ParseParameters(configs ...[]byte) (Parameters, error) {
	return parseNamed(func(i int) string { return fmt.Sprintf("configuration %d", i) }, configs)
}

// parseNamed is ParseParameters with errors naming configuration i as
// name(i): the kubelet plugin names where in the claim it came from.
func parseNamed(name func(i int) string, configs [][]byte) (Parameters, error) {
	p := DefaultParameters()
	for i, raw := range configs {
		var c claimParameters
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return Parameters{}, fmt.Errorf("decoding %s: %w: %w", name(i), ErrInvalidParameters, err)
		}
		if _, err := dec.Token(); err != io.EOF {
			return Parameters{}, fmt.Errorf("decoding %s: %w: data after the object", name(i), ErrInvalidParameters)
		}
		if c.APIVersion != ParametersAPIVersion || c.Kind != ParametersKind {
			return Parameters{}, fmt.Errorf("%s: %w", name(i), &FieldError{
				Field:   "apiVersion/kind",
				Value:   fmt.Sprintf("%q/%q", c.APIVersion, c.Kind),
				Allowed: fmt.Sprintf("%q/%q", ParametersAPIVersion, ParametersKind),
			})
		}
		if c.QueuePairs != nil {
			p.QueuePairs = *c.QueuePairs
		}
		if c.QueueDepth != nil {
			p.QueueDepth = *c.QueueDepth
		}
		if c.PoolBytes != nil {
			p.PoolBytes = *c.PoolBytes
		}
		if c.Completion != nil {
			p.Completion = *c.Completion
		}
		if c.Mode != nil {
			p.Mode = *c.Mode
		}
	}
	if err := p.Validate(); err != nil {
		return Parameters{}, err
	}
	return p, nil
}
