// Resolves a name with Go's own resolver (net.DefaultResolver, PreferGo) and logs what it got.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	net.DefaultResolver.PreferGo = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "lookup:", err)
		os.Exit(1)
	}
	var out []string
	v4 := ""
	for _, a := range addrs {
		out = append(out, a.IP.String())
		if a.IP.To4() != nil && v4 == "" {
			v4 = a.IP.String()
		}
	}
	comm, _ := os.ReadFile("/proc/self/comm")
	fmt.Printf("pid=%d comm=%s addrs=%s\n", os.Getpid(), strings.TrimSpace(string(comm)), strings.Join(out, ","))
	if v4 != "" && len(os.Args) > 2 {
		// Connect to the answer, as a client would: a refused connect still makes a row.
		c, err := net.DialTimeout("tcp4", net.JoinHostPort(v4, os.Args[2]), 2*time.Second)
		if err == nil {
			c.Close()
		}
	}
}
