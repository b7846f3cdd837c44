package remote_test

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/raftor/raftor/remote"
)

func TestConfigValidation(t *testing.T) {
	serverTLS := &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}
	tests := []struct {
		name string
		cfg  remote.Config
		want string
	}{
		{"no port", remote.Config{Address: "127.0.0.1"}, "missing port"},
		{"bad port", remote.Config{Address: "127.0.0.1:99999"}, "port must be"},
		{"bad advertised", remote.Config{Address: "127.0.0.1:0", AdvertisedAddress: "nope"}, "advertised"},
		{"half TLS", remote.Config{Address: "127.0.0.1:0", ServerTLS: serverTLS}, "set together"},
		{"TLS without client auth", remote.Config{Address: "127.0.0.1:0", ServerTLS: &tls.Config{}, ClientTLS: &tls.Config{}}, "mutual"},
		{"tiny limit", remote.Config{Address: "127.0.0.1:0", MaxMessageBytes: 1000}, "below 1 MiB"},
		{"queue below batch", remote.Config{Address: "127.0.0.1:0", WriterBatchSize: 10, WriterQueueSize: 5}, "WriterQueueSize"},
		{"fine", remote.Config{Address: "127.0.0.1:0"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
