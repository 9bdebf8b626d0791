// Package pcietest builds fake sysfs trees and config-space images for
// tests of package pcie and of the commands built on it, the way
// net/http/httptest serves tests of net/http.
//
// A Tree lays out devices/, bus/pci/ and kernel/iommu_groups/ as a
// running kernel does, so pcie.Scan reads it exactly as it reads /sys.
// Config builds config-space images capability by capability. Neither
// ever touches the real /sys.
package pcietest
