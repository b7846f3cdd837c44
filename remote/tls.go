package remote

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
)

// MutualTLS builds the server and client TLS configurations of a node for
// mutual authentication: both sides present cert, and both verify the
// other against the cluster's CA pool. A node whose certificate the pool
// does not trust cannot connect, and cannot be connected to.
func MutualTLS(ca *x509.CertPool, cert tls.Certificate) (server, client *tls.Config, err error) {
	if ca == nil {
		return nil, nil, errors.New("remote: mutual TLS needs a CA pool")
	}
	if len(cert.Certificate) == 0 || cert.PrivateKey == nil {
		return nil, nil, errors.New("remote: mutual TLS needs a certificate with its private key")
	}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    ca,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca,
	}
	return server, client, nil
}
