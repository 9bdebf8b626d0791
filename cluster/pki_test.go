package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
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

// TestKubeconfig: writeKubeconfig writes the kubeconfig alone (its
// certificate and key embedded, no files beside it), and restConfig reads
// back the server, the CA and a client pair of the user it names.
func TestKubeconfig(t *testing.T) {
	ca, err := newAuthority()
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{ca: ca, pki: t.TempDir(), server: "https://127.0.0.1:6443"}
	path, err := c.writeKubeconfig("admin", certRequest{commonName: "umd-admin", orgs: []string{"system:masters"}, client: true})
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(c.pki)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || filepath.Join(c.pki, ents[0].Name()) != path {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("writeKubeconfig wrote %q, want only %s", names, filepath.Base(path))
	}
	if st, err := os.Stat(path); err != nil {
		t.Error(err)
	} else if st.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode %v, want 0600", st.Mode())
	}
	rc, err := restConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != c.server || string(rc.CAData) != string(ca.certPEM) {
		t.Errorf("host %q, CA %q: want %q and the cluster's CA", rc.Host, rc.CAData, c.server)
	}
	if _, err := tls.X509KeyPair(rc.CertData, rc.KeyData); err != nil {
		t.Fatalf("client pair: %v", err)
	}
	if cert := parseCert(t, rc.CertData); cert.Subject.CommonName != "umd-admin" {
		t.Errorf("client certificate of %v, want umd-admin", cert.Subject)
	}
}
