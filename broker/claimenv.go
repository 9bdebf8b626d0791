package broker

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/umdkit/umd/pcie"
)

// The environment a container prepared for a claim gets (the DRA driver's
// CDI spec sets it; package dra aliases these names), and that
// ClaimFromEnv reads in the container.
const (
	// EnvSocket is the path of umdd's socket in the container (not set
	// for an exclusive claim, which gets the device itself).
	EnvSocket = "UMD_SOCKET"
	// EnvClaim is the claim's UID.
	EnvClaim = "UMD_CLAIM"
	// EnvMode is how the claim reaches its devices: mediated, trusted,
	// vf or exclusive.
	EnvMode = "UMD_MODE"
	// EnvDevicePrefix + a device's name in upper case with '-' as '_'
	// ("UMD_DEVICE_NVME_0000_03_00_0") holds "<BDF>,<grant ID>".
	EnvDevicePrefix = "UMD_DEVICE_"
)

// Claim modes that are not broker sessions: a VF the client leases
// (Client.LeaseVF) and a device the container opens itself. Their
// devices carry no grant.
const (
	claimModeVF        = "vf"
	claimModeExclusive = "exclusive"
)

// ErrEnvMissing and ErrEnvGarbled are matched by ClaimFromEnv's errors:
// a variable the claim needs is not set, or is set to something it cannot
// read.
var (
	ErrEnvMissing = errors.New("claim environment variable missing")
	ErrEnvGarbled = errors.New("claim environment variable garbled")
)

// EnvError says which variable of a claim's environment is wrong and why.
// It matches ErrEnvMissing or ErrEnvGarbled.
type EnvError struct {
	Var     string
	Value   string // as found; empty when missing
	Problem string
	kind    error
}

func (e *EnvError) Error() string {
	if e.kind == ErrEnvMissing {
		return fmt.Sprintf("%s is not set: %s", e.Var, e.Problem)
	}
	return fmt.Sprintf("%s=%q: %s", e.Var, e.Value, e.Problem)
}

// Unwrap makes an EnvError match its kind.
func (e *EnvError) Unwrap() error { return e.kind }

// ClaimEnv is a claim's environment, read.
type ClaimEnv struct {
	Socket  string // empty for an exclusive claim
	Claim   string
	Mode    string
	Devices []ClaimDevice // by variable name
}

// ClaimDevice is one device of a claim.
type ClaimDevice struct {
	Var   string // the variable it came from
	BDF   string // canonical, "0000:03:00.0"
	Grant string // the grant ID to open (Client.OpenGrant); empty in vf and exclusive modes
}

// ClaimFromEnv reads a claim's environment from environ (os.Environ's
// form, "NAME=value"): UMD_CLAIM, UMD_MODE, UMD_SOCKET (unless exclusive)
// and at least one UMD_DEVICE_* variable. Every error is an *EnvError
// naming the variable.
func ClaimFromEnv(environ []string) (ClaimEnv, error) {
	vars := map[string]string{}
	var devVars []string
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if _, dup := vars[k]; dup {
			continue // the first wins, as with getenv
		}
		vars[k] = v
		if strings.HasPrefix(k, EnvDevicePrefix) {
			devVars = append(devVars, k)
		}
	}
	sort.Strings(devVars)
	missing := func(name, why string) error { return &EnvError{Var: name, Problem: why, kind: ErrEnvMissing} }
	garbled := func(name, why string) error {
		return &EnvError{Var: name, Value: vars[name], Problem: why, kind: ErrEnvGarbled}
	}
	var env ClaimEnv
	var ok bool
	if env.Claim, ok = vars[EnvClaim]; !ok {
		return ClaimEnv{}, missing(EnvClaim, "the container was not prepared for a umd claim")
	}
	if e := validClaim("claim", env.Claim); e != nil {
		return ClaimEnv{}, garbled(EnvClaim, e.Message)
	}
	if env.Mode, ok = vars[EnvMode]; !ok {
		return ClaimEnv{}, missing(EnvMode, "want mediated, trusted, vf or exclusive")
	}
	switch env.Mode {
	case ModeMediated, ModeTrusted, claimModeVF, claimModeExclusive:
	default:
		return ClaimEnv{}, garbled(EnvMode, "want mediated, trusted, vf or exclusive")
	}
	if env.Mode != claimModeExclusive {
		if env.Socket, ok = vars[EnvSocket]; !ok {
			return ClaimEnv{}, missing(EnvSocket, "a "+env.Mode+" claim reaches umdd through its socket")
		}
		if env.Socket == "" {
			return ClaimEnv{}, garbled(EnvSocket, "empty path")
		}
	}
	if len(devVars) == 0 {
		return ClaimEnv{}, missing(EnvDevicePrefix+"*", "a claim has at least one device")
	}
	granted := env.Mode == ModeMediated || env.Mode == ModeTrusted
	for _, k := range devVars {
		bdfText, grant, ok := strings.Cut(vars[k], ",")
		if !ok {
			return ClaimEnv{}, garbled(k, "want <PCI address>,<grant ID>")
		}
		bdf, err := pcie.ParseBDF(bdfText)
		if err != nil {
			return ClaimEnv{}, garbled(k, fmt.Sprintf("the PCI address: %v", err))
		}
		switch {
		case granted && grant == "":
			return ClaimEnv{}, garbled(k, "no grant ID after the comma; a "+env.Mode+" claim opens its reservation with it")
		case granted:
			if e := validGrant(grant); e != nil {
				return ClaimEnv{}, garbled(k, fmt.Sprintf("grant ID: want %d lower-case hex digits", 2*grantBytes))
			}
		case grant != "":
			return ClaimEnv{}, garbled(k, "a "+env.Mode+" claim has no grant")
		}
		env.Devices = append(env.Devices, ClaimDevice{Var: k, BDF: bdf.String(), Grant: grant})
	}
	return env, nil
}
