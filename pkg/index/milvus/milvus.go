// Package milvus is the gallery backend for deployments that outgrow one
// machine: templates live in a Milvus cluster, reached through
// github.com/milvus-io/milvus-sdk-go/v2.
//
// # Layout in Milvus
//
// Each embedding space is one Milvus collection, named Prefix + the
// collection name with '-' turned into '_' (index names allow only a-z, 0-9
// and '-', so the mapping is one-to-one): "dlib-resnet34-v1" becomes
// "facegate_dlib_resnet34_v1". Aliases map the same way, so an alias
// "dlib-resnet34" for the active space is the Milvus alias
// "facegate_dlib_resnet34", and SwitchAlias is Milvus's AlterAlias: a
// rollout switches atomically on the server.
//
// Schema: id (VarChar primary key), person, site, photo, model (VarChar) and
// vector (FloatVector of the space's dimension). The vector index and its
// parameters (HNSW, IVF_FLAT, IVF_SQ8 or FLAT), the metric (L2 or IP) and the
// consistency level are configurable. The default consistency is Strong: at
// a door, a person enrolled a moment ago must be found.
//
// # Deletion
//
// Milvus deletes by writing tombstones; the rows stay in sealed segments
// until compaction rewrites them. Erasure therefore deletes by expression,
// flushes, and asks for a manual compaction (and by default waits for it),
// so the vectors are physically dropped, not just hidden.
package milvus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"

	"github.com/facegate/facegate/pkg/index"
)

// Field names of the schema.
const (
	FieldID     = "id"
	FieldPerson = "person"
	FieldSite   = "site"
	FieldPhoto  = "photo"
	FieldModel  = "model"
	FieldVector = "vector"
)

// IndexConfig chooses the Milvus vector index and its parameters.
type IndexConfig struct {
	// Type is "HNSW" (default), "IVF_FLAT", "IVF_SQ8" or "FLAT".
	Type string `json:"type"`
	// HNSW: graph degree, build beam width, search beam width (raised to k
	// when k is larger, as Milvus requires ef >= k).
	M              int `json:"m"`
	EfConstruction int `json:"efConstruction"`
	Ef             int `json:"ef"`
	// IVF: number of clusters and how many a search visits.
	NList  int `json:"nlist"`
	NProbe int `json:"nprobe"`
}

// Config configures the backend.
type Config struct {
	// Address is Milvus's gRPC endpoint, host:port.
	Address  string
	Username string
	Password string
	// Prefix starts every collection and alias name; default "facegate_".
	Prefix string
	// Metric is "L2" (default) or "IP".
	Metric string
	Index  IndexConfig
	// Consistency is "Strong" (default), "Session", "Bounded" or "Eventually".
	Consistency string
	// ShardNum is the number of shards of a new collection; 0 = Milvus's default.
	ShardNum int32
	// NoWaitCompaction returns from erasure once compaction is requested,
	// without waiting for it to complete.
	NoWaitCompaction bool
	// AliasTTL is how long a resolved alias is trusted by this client
	// before it asks again; default 2s. SwitchAlias through this backend
	// takes effect at once; a switch made elsewhere within AliasTTL.
	AliasTTL time.Duration
	// UpsertBatch bounds rows per Upsert request (gRPC message size); default 4096.
	UpsertBatch int
}

var prefixRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,31}$`)

func (c Config) withDefaults() (Config, error) {
	if c.Address == "" {
		return c, fmt.Errorf("milvus: %w: no address", index.ErrInvalidArgument)
	}
	if c.Prefix == "" {
		c.Prefix = "facegate_"
	}
	if !prefixRE.MatchString(c.Prefix) {
		return c, fmt.Errorf("milvus: %w: prefix %q", index.ErrInvalidArgument, c.Prefix)
	}
	if c.Metric == "" {
		c.Metric = "L2"
	}
	if c.Metric != "L2" && c.Metric != "IP" {
		return c, fmt.Errorf("milvus: %w: metric %q (L2 or IP)", index.ErrInvalidArgument, c.Metric)
	}
	if c.Consistency == "" {
		c.Consistency = "Strong"
	}
	if _, ok := consistencyLevels[c.Consistency]; !ok {
		return c, fmt.Errorf("milvus: %w: consistency %q", index.ErrInvalidArgument, c.Consistency)
	}
	ic := &c.Index
	if ic.Type == "" {
		ic.Type = "HNSW"
	}
	switch ic.Type {
	case "HNSW":
		ic.M = defaultInt(ic.M, 16)
		ic.EfConstruction = defaultInt(ic.EfConstruction, 200)
		ic.Ef = defaultInt(ic.Ef, 64)
	case "IVF_FLAT", "IVF_SQ8":
		ic.NList = defaultInt(ic.NList, 1024)
		ic.NProbe = defaultInt(ic.NProbe, 16)
	case "FLAT":
	default:
		return c, fmt.Errorf("milvus: %w: index type %q (HNSW, IVF_FLAT, IVF_SQ8 or FLAT)", index.ErrInvalidArgument, ic.Type)
	}
	if c.AliasTTL == 0 {
		c.AliasTTL = 2 * time.Second
	}
	if c.UpsertBatch <= 0 {
		c.UpsertBatch = 4096
	}
	return c, nil
}

func defaultInt(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}

var consistencyLevels = map[string]entity.ConsistencyLevel{
	"Strong":     entity.ClStrong,
	"Session":    entity.ClSession,
	"Bounded":    entity.ClBounded,
	"Eventually": entity.ClEventually,
}

// Backend is the Milvus gallery. It implements index.Index.
type Backend struct {
	cfg    Config
	c      client.Client
	metric entity.MetricType
	cl     entity.ConsistencyLevel

	mu     sync.Mutex
	closed bool
	// resolved caches name -> (physical collection, dimension); aliases
	// expire after AliasTTL, collections never change dimension.
	resolved map[string]resolution
}

type resolution struct {
	physical string
	dim      int
	expires  time.Time // zero for a collection
}

var _ index.Index = (*Backend)(nil)

// New connects to Milvus.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c, err := client.NewClient(ctx, client.Config{Address: cfg.Address, Username: cfg.Username, Password: cfg.Password})
	if err != nil {
		return nil, fmt.Errorf("milvus: connect to %s: %w", cfg.Address, err)
	}
	return &Backend{
		cfg:      cfg,
		c:        c,
		metric:   entity.MetricType(cfg.Metric),
		cl:       consistencyLevels[cfg.Consistency],
		resolved: make(map[string]resolution),
	}, nil
}

// Config returns the effective configuration.
func (b *Backend) Config() Config { return b.cfg }

// physical maps an index name to its Milvus name.
func (b *Backend) physical(name string) string {
	return b.cfg.Prefix + strings.ReplaceAll(name, "-", "_")
}

// logical maps a Milvus name back, or reports that it is not ours.
func (b *Backend) logical(phys string) (string, bool) {
	rest, ok := strings.CutPrefix(phys, b.cfg.Prefix)
	if !ok {
		return "", false
	}
	name := strings.ReplaceAll(rest, "_", "-")
	return name, index.ValidateName(name) == nil
}

func (b *Backend) check() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("milvus: %w", index.ErrClosed)
	}
	return nil
}

// wrap adds context to an error from the SDK. A call cut short by its
// context reports the context's error, so callers can test for it.
func wrap(ctx context.Context, what string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("milvus: %s: %w", what, cerr)
	}
	return fmt.Errorf("milvus: %s: %w", what, err)
}

// describe returns the real collection behind a Milvus name (itself for a
// collection, the target for an alias) and its dimension; ok is false when
// the name exists as neither.
func (b *Backend) describe(ctx context.Context, phys string) (target string, dim int, ok bool, err error) {
	coll, derr := b.c.DescribeCollection(ctx, phys)
	if derr != nil {
		// Describe fails for a missing name and for a broken connection
		// alike; HasCollection tells them apart.
		has, herr := b.c.HasCollection(ctx, phys)
		if herr != nil {
			return "", 0, false, wrap(ctx, "describe "+phys, derr)
		}
		if !has {
			return "", 0, false, nil
		}
		return "", 0, false, wrap(ctx, "describe "+phys, derr)
	}
	for _, f := range coll.Schema.Fields {
		if f.Name == FieldVector {
			d, perr := strconv.Atoi(f.TypeParams[entity.TypeParamDim])
			if perr != nil {
				return "", 0, false, fmt.Errorf("milvus: collection %s: vector dimension %q: %w", coll.Name, f.TypeParams[entity.TypeParamDim], perr)
			}
			return coll.Schema.CollectionName, d, true, nil
		}
	}
	return "", 0, false, fmt.Errorf("milvus: %s is not a facegate gallery (no %q field)", phys, FieldVector)
}

// resolve maps a collection or alias name to the physical collection and
// its dimension.
func (b *Backend) resolve(ctx context.Context, name string) (resolution, error) {
	if err := b.check(); err != nil {
		return resolution{}, err
	}
	if err := index.ValidateName(name); err != nil {
		return resolution{}, fmt.Errorf("milvus: collection %q: %w: %w", name, index.ErrUnknownCollection, err)
	}
	now := time.Now()
	b.mu.Lock()
	r, ok := b.resolved[name]
	b.mu.Unlock()
	if ok && (r.expires.IsZero() || now.Before(r.expires)) {
		return r, nil
	}
	phys := b.physical(name)
	target, dim, found, err := b.describe(ctx, phys)
	if err != nil {
		return resolution{}, err
	}
	if !found {
		return resolution{}, fmt.Errorf("milvus: collection %q: %w", name, index.ErrUnknownCollection)
	}
	r = resolution{physical: target, dim: dim}
	if target != phys {
		r.expires = now.Add(b.cfg.AliasTTL)
	}
	b.mu.Lock()
	b.resolved[name] = r
	b.mu.Unlock()
	return r, nil
}

func (b *Backend) forget() {
	b.mu.Lock()
	clear(b.resolved)
	b.mu.Unlock()
}

// CreateCollection implements index.Index: schema, vector index, load.
func (b *Backend) CreateCollection(ctx context.Context, c index.Collection) error {
	if err := b.check(); err != nil {
		return err
	}
	if err := index.ValidateCollection(c); err != nil {
		return fmt.Errorf("milvus: create collection: %w", err)
	}
	phys := b.physical(c.Name)
	target, dim, found, err := b.describe(ctx, phys)
	if err != nil {
		return err
	}
	if found {
		if target != phys {
			return fmt.Errorf("milvus: create collection %q: %w: the name is an alias", c.Name, index.ErrDuplicate)
		}
		if dim != c.Dim {
			return fmt.Errorf("milvus: create collection %q with dimension %d: %w: it exists with dimension %d", c.Name, c.Dim, index.ErrWrongDimension, dim)
		}
		return b.load(ctx, phys)
	}
	schema := entity.NewSchema().WithName(phys).WithDescription("facegate gallery " + c.Name).
		WithField(entity.NewField().WithName(FieldID).WithDataType(entity.FieldTypeVarChar).WithMaxLength(index.MaxIDLen).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName(FieldPerson).WithDataType(entity.FieldTypeVarChar).WithMaxLength(index.MaxIDLen)).
		WithField(entity.NewField().WithName(FieldSite).WithDataType(entity.FieldTypeVarChar).WithMaxLength(index.MaxIDLen)).
		WithField(entity.NewField().WithName(FieldPhoto).WithDataType(entity.FieldTypeVarChar).WithMaxLength(index.MaxIDLen)).
		WithField(entity.NewField().WithName(FieldModel).WithDataType(entity.FieldTypeVarChar).WithMaxLength(index.MaxNameLen)).
		WithField(entity.NewField().WithName(FieldVector).WithDataType(entity.FieldTypeFloatVector).WithDim(int64(c.Dim)))
	if err := b.c.CreateCollection(ctx, schema, b.cfg.ShardNum, client.WithConsistencyLevel(b.cl)); err != nil {
		// Another replica may have created it first.
		if _, d, ok, derr := b.describe(ctx, phys); derr == nil && ok && d == c.Dim {
			return b.load(ctx, phys)
		}
		return wrap(ctx, "create collection "+phys, err)
	}
	idx, err := b.vectorIndex()
	if err != nil {
		return err
	}
	if err := b.c.CreateIndex(ctx, phys, FieldVector, idx, false); err != nil {
		return wrap(ctx, "create index on "+phys, err)
	}
	return b.load(ctx, phys)
}

func (b *Backend) vectorIndex() (entity.Index, error) {
	ic := b.cfg.Index
	var (
		idx entity.Index
		err error
	)
	switch ic.Type {
	case "HNSW":
		idx, err = entity.NewIndexHNSW(b.metric, ic.M, ic.EfConstruction)
	case "IVF_FLAT":
		idx, err = entity.NewIndexIvfFlat(b.metric, ic.NList)
	case "IVF_SQ8":
		idx, err = entity.NewIndexIvfSQ8(b.metric, ic.NList)
	case "FLAT":
		idx, err = entity.NewIndexFlat(b.metric)
	}
	if err != nil {
		return nil, fmt.Errorf("milvus: %w: index %+v: %w", index.ErrInvalidArgument, ic, err)
	}
	return idx, nil
}

func (b *Backend) searchParam(k int) (entity.SearchParam, error) {
	ic := b.cfg.Index
	var (
		sp  entity.SearchParam
		err error
	)
	switch ic.Type {
	case "HNSW":
		sp, err = entity.NewIndexHNSWSearchParam(max(ic.Ef, k))
	case "IVF_FLAT":
		sp, err = entity.NewIndexIvfFlatSearchParam(ic.NProbe)
	case "IVF_SQ8":
		sp, err = entity.NewIndexIvfSQ8SearchParam(ic.NProbe)
	default:
		sp, err = entity.NewIndexFlatSearchParam()
	}
	if err != nil {
		return nil, fmt.Errorf("milvus: %w: search parameters %+v: %w", index.ErrInvalidArgument, ic, err)
	}
	return sp, nil
}

// load asks Milvus to load a collection into its query nodes and waits.
func (b *Backend) load(ctx context.Context, phys string) error {
	if err := b.c.LoadCollection(ctx, phys, true); err != nil {
		return wrap(ctx, "load "+phys, err)
	}
	wait := 5 * time.Millisecond
	for {
		p, err := b.c.GetLoadingProgress(ctx, phys, nil)
		if err != nil {
			return wrap(ctx, "load "+phys, err)
		}
		if p >= 100 {
			return nil
		}
		select {
		case <-ctx.Done():
			return wrap(ctx, "load "+phys, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// DropCollection implements index.Index.
func (b *Backend) DropCollection(ctx context.Context, name string) error {
	r, err := b.resolve(ctx, name)
	if err != nil {
		return err
	}
	if r.physical != b.physical(name) {
		return fmt.Errorf("milvus: drop collection %q: %w: it is an alias", name, index.ErrUnknownCollection)
	}
	aliases, err := b.aliasesOf(ctx, r.physical)
	if err != nil {
		return err
	}
	if len(aliases) > 0 {
		return fmt.Errorf("milvus: drop collection %q: %w: aliases %v point at it", name, index.ErrInUse, aliases)
	}
	defer b.forget()
	if err := b.c.DropCollection(ctx, r.physical); err != nil {
		return wrap(ctx, "drop "+r.physical, err)
	}
	return nil
}

// Collections implements index.Index.
func (b *Backend) Collections(ctx context.Context) ([]index.Collection, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	cs, err := b.c.ListCollections(ctx)
	if err != nil {
		return nil, wrap(ctx, "list collections", err)
	}
	var out []index.Collection
	for _, c := range cs {
		name, ok := b.logical(c.Name)
		if !ok {
			continue
		}
		_, dim, found, err := b.describe(ctx, c.Name)
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, index.Collection{Name: name, Dim: dim})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// SwitchAlias implements index.Index with CreateAlias or AlterAlias.
func (b *Backend) SwitchAlias(ctx context.Context, alias, coll string) error {
	if err := b.check(); err != nil {
		return err
	}
	if err := index.ValidateName(alias); err != nil {
		return fmt.Errorf("milvus: switch alias: %w", err)
	}
	cphys := b.physical(coll)
	target, _, found, err := b.describe(ctx, cphys)
	if err != nil {
		return err
	}
	if !found || target != cphys {
		return fmt.Errorf("milvus: switch alias %q to %q: %w", alias, coll, index.ErrUnknownCollection)
	}
	aphys := b.physical(alias)
	cur, _, exists, err := b.describe(ctx, aphys)
	if err != nil {
		return err
	}
	defer b.forget()
	switch {
	case exists && cur == aphys:
		return fmt.Errorf("milvus: switch alias %q: %w: a collection has that name", alias, index.ErrDuplicate)
	case exists:
		err = b.c.AlterAlias(ctx, cphys, aphys)
	default:
		err = b.c.CreateAlias(ctx, cphys, aphys)
	}
	if err != nil {
		return wrap(ctx, "switch alias "+aphys+" to "+cphys, err)
	}
	return nil
}

// ResolveAlias implements index.Index.
func (b *Backend) ResolveAlias(ctx context.Context, alias string) (string, error) {
	if err := b.check(); err != nil {
		return "", err
	}
	if err := index.ValidateName(alias); err != nil {
		return "", fmt.Errorf("milvus: resolve alias: %w", err)
	}
	aphys := b.physical(alias)
	target, _, found, err := b.describe(ctx, aphys)
	if err != nil {
		return "", err
	}
	if !found || target == aphys {
		return "", fmt.Errorf("milvus: alias %q: %w", alias, index.ErrNotFound)
	}
	name, ok := b.logical(target)
	if !ok {
		return "", fmt.Errorf("milvus: alias %q points at %s, which is not a facegate collection", alias, target)
	}
	return name, nil
}

// DropAlias implements index.Index.
func (b *Backend) DropAlias(ctx context.Context, alias string) error {
	if _, err := b.ResolveAlias(ctx, alias); err != nil {
		return err
	}
	defer b.forget()
	if err := b.c.DropAlias(ctx, b.physical(alias)); err != nil {
		return wrap(ctx, "drop alias "+alias, err)
	}
	return nil
}

// aliasesOf lists the aliases of a collection. The SDK's DescribeCollection
// drops the aliases from Milvus's answer, so this asks the service directly.
func (b *Backend) aliasesOf(ctx context.Context, phys string) ([]string, error) {
	g, ok := b.c.(*client.GrpcClient)
	if !ok {
		return nil, errors.New("milvus: client is not the gRPC client")
	}
	resp, err := g.Service.DescribeCollection(ctx, describeRequest(phys))
	if err != nil {
		return nil, wrap(ctx, "describe "+phys, err)
	}
	if err := statusError(resp.GetStatus()); err != nil {
		return nil, wrap(ctx, "describe "+phys, err)
	}
	return resp.GetAliases(), nil
}

// Upsert implements index.Index.
func (b *Backend) Upsert(ctx context.Context, coll string, ts []index.Template) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("milvus: upsert: %w", err)
	}
	r, err := b.resolve(ctx, coll)
	if err != nil {
		return err
	}
	vecs, err := index.ValidateTemplates(r.dim, ts)
	if err != nil {
		return fmt.Errorf("milvus: upsert into %q: %w", coll, err)
	}
	model, _ := b.logical(r.physical)
	// Validation is complete before the first request, so only a server or
	// network failure can leave a batch larger than UpsertBatch half applied.
	for lo := 0; lo < len(ts); lo += b.cfg.UpsertBatch {
		hi := min(lo+b.cfg.UpsertBatch, len(ts))
		n := hi - lo
		ids, persons, sites, photos, models := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		for i, t := range ts[lo:hi] {
			ids[i], persons[i], sites[i], photos[i], models[i] = t.ID, t.Person, t.Site, t.Photo, model
		}
		_, err := b.c.Upsert(ctx, r.physical, "",
			entity.NewColumnVarChar(FieldID, ids),
			entity.NewColumnVarChar(FieldPerson, persons),
			entity.NewColumnVarChar(FieldSite, sites),
			entity.NewColumnVarChar(FieldPhoto, photos),
			entity.NewColumnVarChar(FieldModel, models),
			entity.NewColumnFloatVector(FieldVector, r.dim, vecs[lo:hi]))
		if err != nil {
			return wrap(ctx, "upsert into "+r.physical, err)
		}
	}
	return nil
}

// quote renders an id as an expression string literal. Ids are validated to
// an alphabet without quotes or backslashes, so no escaping is needed.
func quote(s string) string { return `"` + s + `"` }

func eq(field, v string) string { return field + " == " + quote(v) }

func and(terms ...string) string {
	var out []string
	for _, t := range terms {
		if t != "" {
			out = append(out, t)
		}
	}
	return strings.Join(out, " and ")
}

// countWhere counts rows matching expr.
func (b *Backend) countWhere(ctx context.Context, phys, expr string) (int, error) {
	rs, err := b.c.Query(ctx, phys, nil, expr, []string{"count(*)"}, client.WithSearchQueryConsistencyLevel(b.cl))
	if err != nil {
		return 0, wrap(ctx, "count in "+phys, err)
	}
	col := rs.GetColumn("count(*)")
	if col == nil || col.Len() != 1 {
		return 0, fmt.Errorf("milvus: count in %s: no count in the answer", phys)
	}
	n, err := col.GetAsInt64(0)
	if err != nil {
		return 0, fmt.Errorf("milvus: count in %s: %w", phys, err)
	}
	return int(n), nil
}

// deleteWhere deletes rows matching expr and purges them: flush, so the
// tombstones are persisted, then compaction, so the rows are rewritten out
// of their segments.
func (b *Backend) deleteWhere(ctx context.Context, phys, expr string) (int, error) {
	n, err := b.countWhere(ctx, phys, expr)
	if err != nil || n == 0 {
		return 0, err
	}
	if err := b.c.Delete(ctx, phys, "", expr); err != nil {
		return 0, wrap(ctx, "delete from "+phys, err)
	}
	if err := b.c.Flush(ctx, phys, false); err != nil {
		return n, wrap(ctx, "flush "+phys, err)
	}
	id, err := b.c.ManualCompaction(ctx, phys, 0)
	if err != nil {
		return n, wrap(ctx, "compact "+phys, err)
	}
	if b.cfg.NoWaitCompaction {
		return n, nil
	}
	wait := 10 * time.Millisecond
	for {
		st, err := b.c.GetCompactionState(ctx, id)
		if err != nil {
			return n, wrap(ctx, "compaction state of "+phys, err)
		}
		if st == entity.CompactionStateCompleted {
			return n, nil
		}
		select {
		case <-ctx.Done():
			return n, wrap(ctx, "wait for compaction of "+phys, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// DeleteTemplates implements index.Index.
func (b *Backend) DeleteTemplates(ctx context.Context, coll string, ids []string) (int, error) {
	r, err := b.resolve(ctx, coll)
	if err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	quoted := make([]string, len(ids))
	for i, id := range ids {
		if err := index.ValidateID("template", id); err != nil {
			return 0, fmt.Errorf("milvus: delete from %q: %w", coll, err)
		}
		quoted[i] = quote(id)
	}
	return b.deleteWhere(ctx, r.physical, FieldID+" in ["+strings.Join(quoted, ", ")+"]")
}

// DeletePerson implements index.Index.
func (b *Backend) DeletePerson(ctx context.Context, coll, person string) (int, error) {
	if err := index.ValidateID("person", person); err != nil {
		return 0, fmt.Errorf("milvus: delete person: %w", err)
	}
	r, err := b.resolve(ctx, coll)
	if err != nil {
		return 0, err
	}
	return b.deleteWhere(ctx, r.physical, eq(FieldPerson, person))
}

// ErasePerson implements index.Index over every facegate collection.
func (b *Backend) ErasePerson(ctx context.Context, person string) (int, error) {
	if err := index.ValidateID("person", person); err != nil {
		return 0, fmt.Errorf("milvus: erase person: %w", err)
	}
	cs, err := b.Collections(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, c := range cs {
		n, err := b.deleteWhere(ctx, b.physical(c.Name), eq(FieldPerson, person))
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Search implements index.Index.
func (b *Backend) Search(ctx context.Context, coll string, v []float32, opts index.SearchOptions) (index.Result, error) {
	rs, err := b.SearchBatch(ctx, coll, [][]float32{v}, opts)
	if err != nil {
		return index.Result{}, err
	}
	return rs[0], nil
}

// SearchBatch implements index.Index: one Milvus search with nq queries.
func (b *Backend) SearchBatch(ctx context.Context, coll string, vs [][]float32, opts index.SearchOptions) ([]index.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("milvus: search: %w", err)
	}
	if err := index.ValidateSearch(opts); err != nil {
		return nil, fmt.Errorf("milvus: search: %w", err)
	}
	r, err := b.resolve(ctx, coll)
	if err != nil {
		return nil, err
	}
	vectors := make([]entity.Vector, len(vs))
	for i, v := range vs {
		n, err := index.Normalize(r.dim, v)
		if err != nil {
			return nil, fmt.Errorf("milvus: search %q: query %d: %w", coll, i, err)
		}
		vectors[i] = entity.FloatVector(n)
	}
	if len(vs) == 0 {
		return []index.Result{}, nil
	}
	sp, err := b.searchParam(opts.K)
	if err != nil {
		return nil, err
	}
	expr := and(optEq(FieldSite, opts.Site), optEq(FieldPerson, opts.Person))
	res, err := b.c.Search(ctx, r.physical, nil, expr, []string{FieldPerson, FieldSite, FieldPhoto},
		vectors, FieldVector, b.metric, opts.K, sp, client.WithSearchQueryConsistencyLevel(b.cl))
	if err != nil {
		return nil, wrap(ctx, "search "+r.physical, err)
	}
	if len(res) != len(vs) {
		return nil, fmt.Errorf("milvus: search %s: %d results for %d queries", r.physical, len(res), len(vs))
	}
	out := make([]index.Result, len(vs))
	for i, sr := range res {
		if sr.Err != nil {
			return nil, fmt.Errorf("milvus: search %s: query %d: %w", r.physical, i, sr.Err)
		}
		hits, err := b.hits(sr)
		if err != nil {
			return nil, fmt.Errorf("milvus: search %s: query %d: %w", r.physical, i, err)
		}
		index.SortHits(hits)
		out[i] = index.Result{Hits: hits, Persons: index.GroupByPerson(hits)}
	}
	return out, nil
}

func optEq(field, v string) string {
	if v == "" {
		return ""
	}
	return eq(field, v)
}

// hits converts one query's Milvus result.
func (b *Backend) hits(sr client.SearchResult) ([]index.Hit, error) {
	hits := make([]index.Hit, sr.ResultCount)
	if sr.ResultCount == 0 {
		return hits, nil
	}
	cols := map[string]entity.Column{}
	for _, name := range []string{FieldPerson, FieldSite, FieldPhoto} {
		c := sr.Fields.GetColumn(name)
		if c == nil || c.Len() != sr.ResultCount {
			return nil, fmt.Errorf("field %q missing from the answer", name)
		}
		cols[name] = c
	}
	if sr.IDs == nil || sr.IDs.Len() != sr.ResultCount || len(sr.Scores) != sr.ResultCount {
		return nil, errors.New("ids or scores missing from the answer")
	}
	for i := range hits {
		var err error
		h := &hits[i]
		if h.ID, err = sr.IDs.GetAsString(i); err != nil {
			return nil, err
		}
		if h.Person, err = cols[FieldPerson].GetAsString(i); err != nil {
			return nil, err
		}
		if h.Site, err = cols[FieldSite].GetAsString(i); err != nil {
			return nil, err
		}
		if h.Photo, err = cols[FieldPhoto].GetAsString(i); err != nil {
			return nil, err
		}
		h.Distance = b.distance(sr.Scores[i])
	}
	return hits, nil
}

// distance converts a Milvus score into the L2 distance. Milvus's "L2"
// metric returns the SQUARED L2 distance, so take its root. "IP" returns the
// inner product, and for unit vectors ||a-b|| = sqrt(2 - 2 a.b); that loses
// precision near zero (cancellation), which is why L2 is the default.
func (b *Backend) distance(score float32) float32 {
	if b.metric == entity.IP {
		return index.DistanceFromDot(score)
	}
	return float32(math.Sqrt(math.Max(0, float64(score))))
}

// SearchPerson implements index.Index: a search filtered to the person.
func (b *Backend) SearchPerson(ctx context.Context, coll, person string, v []float32) (index.PersonHit, error) {
	if err := index.ValidateID("person", person); err != nil {
		return index.PersonHit{}, fmt.Errorf("milvus: verify: %w", err)
	}
	res, err := b.Search(ctx, coll, v, index.SearchOptions{K: 1, Person: person})
	if err != nil {
		return index.PersonHit{}, err
	}
	if len(res.Hits) == 0 {
		return index.PersonHit{}, fmt.Errorf("milvus: verify person %q in %q: %w: no templates", person, coll, index.ErrNotFound)
	}
	h := res.Hits[0]
	return index.PersonHit{Person: h.Person, Template: h.ID, Distance: h.Distance}, nil
}

// Count implements index.Index.
func (b *Backend) Count(ctx context.Context, coll string) (int, error) {
	r, err := b.resolve(ctx, coll)
	if err != nil {
		return 0, err
	}
	return b.countWhere(ctx, r.physical, "")
}

// List implements index.Index with a query iterator, which returns rows in
// primary-key order.
func (b *Backend) List(ctx context.Context, coll string, opts index.ListOptions) ([]index.TemplateInfo, error) {
	limit, err := index.ValidateList(opts)
	if err != nil {
		return nil, fmt.Errorf("milvus: list: %w", err)
	}
	r, err := b.resolve(ctx, coll)
	if err != nil {
		return nil, err
	}
	expr := and(optEq(FieldPerson, opts.Person), optEq(FieldSite, opts.Site))
	if opts.After != "" {
		expr = and(expr, FieldID+" > "+quote(opts.After))
	}
	it, err := b.c.QueryIterator(ctx, client.NewQueryIteratorOption(r.physical).
		WithExpr(expr).WithOutputFields(FieldID, FieldPerson, FieldSite, FieldPhoto).WithBatchSize(limit))
	if err != nil {
		return nil, wrap(ctx, "list "+r.physical, err)
	}
	rs, err := it.Next(ctx)
	if errors.Is(err, io.EOF) {
		return []index.TemplateInfo{}, nil
	}
	if err != nil {
		return nil, wrap(ctx, "list "+r.physical, err)
	}
	cols := make([]entity.Column, 4)
	for i, name := range []string{FieldID, FieldPerson, FieldSite, FieldPhoto} {
		if cols[i] = rs.GetColumn(name); cols[i] == nil {
			return nil, fmt.Errorf("milvus: list %s: field %q missing", r.physical, name)
		}
	}
	out := make([]index.TemplateInfo, cols[0].Len())
	for i := range out {
		var vals [4]string
		for j, c := range cols {
			if vals[j], err = c.GetAsString(i); err != nil {
				return nil, fmt.Errorf("milvus: list %s: %w", r.physical, err)
			}
		}
		out[i] = index.TemplateInfo{ID: vals[0], Person: vals[1], Site: vals[2], Photo: vals[3]}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Close implements index.Index.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	return b.c.Close()
}

func describeRequest(phys string) *milvuspb.DescribeCollectionRequest {
	return &milvuspb.DescribeCollectionRequest{CollectionName: phys}
}

func statusError(s *commonpb.Status) error {
	if s == nil {
		return errors.New("no status in the answer")
	}
	if s.GetErrorCode() != commonpb.ErrorCode_Success || s.GetCode() != 0 {
		return fmt.Errorf("code %d: %s", s.GetCode(), s.GetReason())
	}
	return nil
}
