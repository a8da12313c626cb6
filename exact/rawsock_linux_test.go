//go:build linux

package exact

import (
	"net"

	"golang.org/x/sys/unix"
)

// rawSocket opens an AF_PACKET socket that sends whole frames on iface.
func rawSocket(iface string) (int, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return -1, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func writeFD(fd int, b []byte) error { _, err := unix.Write(fd, b); return err }
func closeFD(fd int) error           { return unix.Close(fd) }
