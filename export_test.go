package umd

// SetOpenDeviceHook makes OpenSet and Open call f before opening each
// device, failing there when f does; the returned function removes it.
// For tests of a failure after some devices of a set are up.
func SetOpenDeviceHook(f func(bdf string) error) (restore func()) {
	testHookOpenDevice = f
	return func() { testHookOpenDevice = nil }
}
