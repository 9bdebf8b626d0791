package broker

import (
	"errors"
	"strings"
	"testing"
)

func TestClaimFromEnv(t *testing.T) {
	g1, g2 := strings.Repeat("a1", 16), strings.Repeat("07", 16)
	env, err := ClaimFromEnv([]string{
		"PATH=/bin",
		"UMD_SOCKET=/run/umd/umdd.sock",
		"UMD_CLAIM=0b7c3f1e-uid",
		"UMD_MODE=mediated",
		"UMD_DEVICE_NVME_0000_04_00_0=0000:04:00.0," + g2,
		"UMD_DEVICE_NVME_0000_03_00_0=03:00.0," + g1, // the domain is optional
		"NOEQUALS",
		"UMD_CLAIM=shadowed",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := ClaimEnv{Socket: "/run/umd/umdd.sock", Claim: "0b7c3f1e-uid", Mode: "mediated", Devices: []ClaimDevice{
		{Var: "UMD_DEVICE_NVME_0000_03_00_0", BDF: "0000:03:00.0", Grant: g1},
		{Var: "UMD_DEVICE_NVME_0000_04_00_0", BDF: "0000:04:00.0", Grant: g2},
	}}
	if env.Socket != want.Socket || env.Claim != want.Claim || env.Mode != want.Mode || len(env.Devices) != 2 || env.Devices[0] != want.Devices[0] || env.Devices[1] != want.Devices[1] {
		t.Fatalf("got %+v\nwant %+v", env, want)
	}
	// An exclusive claim has no socket and no grants.
	env, err = ClaimFromEnv([]string{"UMD_CLAIM=c", "UMD_MODE=exclusive", "UMD_DEVICE_X=0000:03:00.0,"})
	if err != nil || env.Socket != "" || len(env.Devices) != 1 || env.Devices[0].Grant != "" {
		t.Fatalf("exclusive: %+v, %v", env, err)
	}

	base := map[string]string{"UMD_SOCKET": "/s", "UMD_CLAIM": "c", "UMD_MODE": "mediated", "UMD_DEVICE_X": "0000:03:00.0," + g1}
	for name, tc := range map[string]struct {
		change  map[string]string // "" deletes
		kind    error
		varName string
	}{
		"no claim":         {map[string]string{"UMD_CLAIM": ""}, ErrEnvMissing, "UMD_CLAIM"},
		"no mode":          {map[string]string{"UMD_MODE": ""}, ErrEnvMissing, "UMD_MODE"},
		"no socket":        {map[string]string{"UMD_SOCKET": ""}, ErrEnvMissing, "UMD_SOCKET"},
		"no devices":       {map[string]string{"UMD_DEVICE_X": ""}, ErrEnvMissing, "UMD_DEVICE_*"},
		"bad claim":        {map[string]string{"UMD_CLAIM": "a/b"}, ErrEnvGarbled, "UMD_CLAIM"},
		"bad mode":         {map[string]string{"UMD_MODE": "shared"}, ErrEnvGarbled, "UMD_MODE"},
		"no comma":         {map[string]string{"UMD_DEVICE_X": "0000:03:00.0"}, ErrEnvGarbled, "UMD_DEVICE_X"},
		"bad address":      {map[string]string{"UMD_DEVICE_X": "0000:03:00," + g1}, ErrEnvGarbled, "UMD_DEVICE_X"},
		"no grant":         {map[string]string{"UMD_DEVICE_X": "0000:03:00.0,"}, ErrEnvGarbled, "UMD_DEVICE_X"},
		"short grant":      {map[string]string{"UMD_DEVICE_X": "0000:03:00.0,abc"}, ErrEnvGarbled, "UMD_DEVICE_X"},
		"grant for a VF":   {map[string]string{"UMD_MODE": "vf"}, ErrEnvGarbled, "UMD_DEVICE_X"},
		"second bad":       {map[string]string{"UMD_DEVICE_Y": "x"}, ErrEnvGarbled, "UMD_DEVICE_Y"},
		"empty socket var": {map[string]string{"UMD_SOCKET": "\x00"}, ErrEnvGarbled, "UMD_SOCKET"},
	} {
		var environ []string
		vars := map[string]string{}
		for k, v := range base {
			vars[k] = v
		}
		for k, v := range tc.change {
			vars[k] = v
		}
		for k, v := range vars {
			switch v {
			case "":
			case "\x00":
				environ = append(environ, k+"=")
			default:
				environ = append(environ, k+"="+v)
			}
		}
		_, err := ClaimFromEnv(environ)
		var ee *EnvError
		if !errors.Is(err, tc.kind) || !errors.As(err, &ee) || ee.Var != tc.varName || !strings.Contains(err.Error(), tc.varName) {
			t.Errorf("%s: %v, want %v naming %s", name, err, tc.kind, tc.varName)
		}
	}
}
