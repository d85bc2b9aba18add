package natsauth

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/facegate/facegate/pkg/bus"
)

// DefaultAccount is the account every facegate user belongs to.
const DefaultAccount = "FACEGATE"

// Deployment describes one NATS server (or cluster member) and its users.
type Deployment struct {
	// ServerName is the server's name in JetStream metadata.
	ServerName string `json:"server_name"`
	// Listen is host:port for clients; port -1 picks a free one (tests).
	Listen string `json:"listen"`
	// StoreDir is JetStream's storage directory.
	StoreDir string `json:"store_dir"`
	// Account holds every user and the streams; default DefaultAccount.
	Account string `json:"account,omitempty"`
	// SiteAccounts puts each building's gateways and doors in an account
	// of their own (SiteAccount) that imports only its building's frames
	// and claims subjects (as services, so JetStream acks come back) and
	// decisions (as a stream) from the central account. Without it every
	// user is in the central account and only permissions separate them.
	SiteAccounts bool `json:"site_accounts,omitempty"`
	// TLS, when set, makes the server require TLS from clients.
	TLS   *TLS   `json:"tls,omitempty"`
	Users []User `json:"users"`
}

// TLS is the server's TLS configuration: PEM file paths.
type TLS struct {
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	// CAFile verifies client certificates; with VerifyClients a client must
	// present one signed by it in addition to its NKEY.
	CAFile        string `json:"ca_file,omitempty"`
	VerifyClients bool   `json:"verify_clients,omitempty"`
}

// ErrInvalidDeployment is wrapped by every error about a Deployment.
var ErrInvalidDeployment = errors.New("invalid NATS deployment")

func (d Deployment) account() string {
	if d.Account == "" {
		return DefaultAccount
	}
	return d.Account
}

// Validate checks the deployment and every user.
func (d Deployment) Validate() error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("natsauth: deployment: %s: %w", fmt.Sprintf(format, args...), ErrInvalidDeployment)
	}
	if _, port, err := net.SplitHostPort(d.Listen); err != nil {
		return fail("listen %q: %v", d.Listen, err)
	} else if p, err := strconv.Atoi(port); err != nil || p < -1 || p > 65535 {
		return fail("listen %q: port %q is not -1..65535", d.Listen, port)
	}
	if d.StoreDir == "" {
		return fail("store_dir is required: JetStream keeps the enrolment stream there")
	}
	if err := bus.ValidateToken("server name", d.ServerName); err != nil {
		return fail("%v", err)
	}
	if err := bus.ValidateToken("account", d.account()); err != nil {
		return fail("%v", err)
	}
	if d.TLS != nil {
		if d.TLS.CertFile == "" || d.TLS.KeyFile == "" {
			return fail("tls needs cert_file and key_file")
		}
		if d.TLS.VerifyClients && d.TLS.CAFile == "" {
			return fail("tls verify_clients needs ca_file")
		}
	}
	if len(d.Users) == 0 {
		return fail("no users")
	}
	seen := make(map[string]bool, len(d.Users))
	for _, u := range d.Users {
		if err := u.Validate(); err != nil {
			return fmt.Errorf("natsauth: deployment: %w", err)
		}
		if seen[u.Name] {
			return fail("user name %q appears twice", u.Name)
		}
		seen[u.Name] = true
	}
	if d.SiteAccounts {
		for _, u := range d.Users {
			if acc := d.accountOf(u); acc == d.account() && (u.Role == RoleGateway || u.Role == RoleDoor) {
				return fail("user %q: building account %q clashes with the central account", u.Name, acc)
			}
		}
	}
	return nil
}

// SeedFile is where EnsureSeeds keeps a user's NKEY seed in dir.
func SeedFile(dir, user string) string { return filepath.Join(dir, user+".nk") }

// EnsureSeeds makes sure every user has an NKEY seed in dir and returns the
// public keys by user name. An existing seed is kept, so regenerating the
// configuration does not revoke running services. Seeds are created with
// mode 0600 in a 0700 directory and never leave those files: the
// configuration holds only public keys.
func EnsureSeeds(dir string, users []User) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("natsauth: seed dir: %w", err)
	}
	pubs := make(map[string]string, len(users))
	for _, u := range users {
		if err := bus.ValidateToken("user name", u.Name); err != nil {
			return nil, fmt.Errorf("natsauth: seed for user: %w", err)
		}
		path := SeedFile(dir, u.Name)
		pub, err := loadSeed(path)
		if errors.Is(err, os.ErrNotExist) {
			pub, err = createSeed(path)
		}
		if err != nil {
			return nil, fmt.Errorf("natsauth: seed for user %q: %w", u.Name, err)
		}
		pubs[u.Name] = pub
	}
	return pubs, nil
}

func loadSeed(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s has mode %v: a seed must be readable by its owner only (chmod 600)", path, st.Mode().Perm())
	}
	seed, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		// The error text never includes the seed.
		return "", fmt.Errorf("%s: not an NKEY seed: %w", path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return "", fmt.Errorf("%s: the seed is not a user key", path)
	}
	return pub, nil
}

func createSeed(path string) (string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", fmt.Errorf("create user key: %w", err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return "", err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", err
	}
	// O_EXCL: never overwrite a seed another run created meanwhile.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	if _, err := f.Write(append(seed, '\n')); err != nil {
		f.Close()
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return pub, nil
}

// Config renders the nats-server configuration of d. pubKeys maps each
// user's name to its NKEY public key (EnsureSeeds).
func Config(d Deployment, pubKeys map[string]string) ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# nats-server configuration generated by facegate natsauth. Do not edit:\n")
	w("# regenerate from the deployment description. Holds public keys only.\n\n")
	w("server_name: %s\n", quote(d.ServerName))
	w("listen: %s\n\n", quote(d.Listen))
	w("jetstream {\n  store_dir: %s\n}\n\n", quote(d.StoreDir))
	if d.TLS != nil {
		w("tls {\n  cert_file: %s\n  key_file: %s\n", quote(d.TLS.CertFile), quote(d.TLS.KeyFile))
		if d.TLS.CAFile != "" {
			w("  ca_file: %s\n", quote(d.TLS.CAFile))
		}
		if d.TLS.VerifyClients {
			w("  verify: true\n")
		}
		w("}\n\n")
	}
	// Users by account, in the order the deployment lists them.
	central := d.account()
	order := []string{central}
	byAccount := map[string][]User{}
	for _, u := range d.Users {
		acc := d.accountOf(u)
		if _, ok := byAccount[acc]; !ok && acc != central {
			order = append(order, acc)
		}
		byAccount[acc] = append(byAccount[acc], u)
	}
	w("accounts {\n")
	for _, acc := range order {
		w("  %s {\n", quote(acc))
		if acc == central {
			w("    jetstream: enabled\n")
			if d.SiteAccounts {
				w("    exports: [\n")
				for _, site := range order[1:] {
					siteName := byAccount[site][0].Site
					w("      # building %s\n", siteName)
					w("      {service: %s, accounts: [%s]}\n", quote(kindSubject(bus.KindFrames, siteName+".>")), quote(site))
					w("      {service: %s, accounts: [%s]}\n", quote(kindSubject(bus.KindClaims, siteName+".>")), quote(site))
					w("      {stream: %s, accounts: [%s]}\n", quote(kindSubject(bus.KindDecisions, siteName+".>")), quote(site))
				}
				w("    ]\n")
			}
		} else {
			siteName := byAccount[acc][0].Site
			// Frames and claims are service imports, not stream
			// exports of the building: a JetStream publish is a
			// request, and only a service import routes the stream's
			// ack back to the gateway.
			w("    imports: [\n")
			w("      {service: {account: %s, subject: %s}}\n", quote(central), quote(kindSubject(bus.KindFrames, siteName+".>")))
			w("      {service: {account: %s, subject: %s}}\n", quote(central), quote(kindSubject(bus.KindClaims, siteName+".>")))
			w("      {stream: {account: %s, subject: %s}}\n", quote(central), quote(kindSubject(bus.KindDecisions, siteName+".>")))
			w("    ]\n")
		}
		w("    users: [\n")
		for _, u := range byAccount[acc] {
			if err := writeUser(w, u, pubKeys); err != nil {
				return nil, err
			}
		}
		w("    ]\n  }\n")
	}
	w("}\n")
	return []byte(b.String()), nil
}

func writeUser(w func(string, ...any), u User, pubKeys map[string]string) error {
	pub, ok := pubKeys[u.Name]
	if !ok || !nkeys.IsValidPublicUserKey(pub) {
		return fmt.Errorf("natsauth: user %q: no valid NKEY public key: %w", u.Name, ErrInvalidDeployment)
	}
	perms, err := PermissionsFor(u)
	if err != nil {
		return err
	}
	label := string(u.Role)
	if u.Site != "" {
		label += " site " + u.Site
	}
	w("      # %s: %s\n", u.Name, label)
	if perms == nil {
		w("      {nkey: %s}\n", quote(pub))
		return nil
	}
	w("      {nkey: %s, permissions: {\n", quote(pub))
	w("        publish: %s\n", allowList(perms.Publish))
	w("        subscribe: %s\n", allowList(perms.Subscribe))
	w("      }}\n")
	return nil
}

// SiteAccount is the account of a building's users when
// Deployment.SiteAccounts is set.
func SiteAccount(site string) string { return "SITE_" + site }

// accountOf is the account u belongs to: its building's when the
// deployment separates buildings and u is a building's device (gateway,
// door), the central account otherwise.
func (d Deployment) accountOf(u User) string {
	if d.SiteAccounts && (u.Role == RoleGateway || u.Role == RoleDoor) {
		return SiteAccount(u.Site)
	}
	return d.account()
}

// allowList renders an allow-list. An empty allow-list means "no
// restriction" to nats-server, so an empty list becomes deny-everything.
func allowList(subjects []string) string {
	if len(subjects) == 0 {
		return `{deny: [">"]}`
	}
	q := make([]string, len(subjects))
	for i, s := range subjects {
		q[i] = quote(s)
	}
	return "{allow: [" + strings.Join(q, ", ") + "]}"
}

// quote writes a double-quoted configuration string. Quoting keeps '$' in
// JetStream subjects from being read as a variable reference.
func quote(s string) string { return strconv.Quote(s) }

// Generate validates d, makes sure every user has a seed in seedDir
// (EnsureSeeds) and returns the server configuration. It is what
// `facegate nats gen` runs.
func Generate(d Deployment, seedDir string) ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	pubs, err := EnsureSeeds(seedDir, d.Users)
	if err != nil {
		return nil, err
	}
	return Config(d, pubs)
}
