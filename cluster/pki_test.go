package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"testing"
)

func parseCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAuthorityIssues: a serving certificate verifies for its IPs and
// names (and not for others) against the CA, a client certificate carries
// its user and groups and verifies for client auth only, and each pairs
// with its key.
func TestAuthorityIssues(t *testing.T) {
	ca, err := newAuthority()
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	sc, sk, err := ca.issue(certRequest{commonName: "kube-apiserver", server: true, ips: []net.IP{net.ParseIP("127.0.0.1")}, dns: []string{"kubernetes"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(sc, sk); err != nil {
		t.Fatalf("serving pair: %v", err)
	}
	srv := parseCert(t, sc)
	for _, name := range []string{"127.0.0.1", "kubernetes"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("serving certificate for %s: %v", name, err)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: "10.9.9.9"}); err == nil {
		t.Error("serving certificate verified for an address it does not name")
	}
	cc, ck, err := ca.issue(certRequest{commonName: "system:node:node-a", orgs: []string{"system:nodes"}, client: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(cc, ck); err != nil {
		t.Fatalf("client pair: %v", err)
	}
	cli := parseCert(t, cc)
	if cli.Subject.CommonName != "system:node:node-a" || len(cli.Subject.Organization) != 1 || cli.Subject.Organization[0] != "system:nodes" {
		t.Errorf("client subject %v", cli.Subject)
	}
	if _, err := cli.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if _, err := cli.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("client certificate verified for server auth")
	}
	other, err := newAuthority()
	if err != nil {
		t.Fatal(err)
	}
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(other.cert)
	if _, err := cli.Verify(x509.VerifyOptions{Roots: otherRoots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("client certificate verified against another CA")
	}
}
