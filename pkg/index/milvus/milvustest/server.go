// Package milvustest is a stand-in for a Milvus server, for tests. It is NOT
// Milvus.
//
// It is an in-process gRPC server implementing the subset of Milvus's gRPC
// protocol (github.com/milvus-io/milvus-proto/go-api/v2, MilvusService) that
// pkg/index/milvus uses, backed by the embedded index (pkg/index/embedded).
// No Milvus server can run on the machines this project is built on, so the
// backend is tested against this stand-in through the real SDK and a real
// gRPC connection on the loopback interface; a separate suite runs against a
// real Milvus when MILVUS_ADDR is set.
//
// What it implements: Connect; collections (create with the facegate schema
// only, describe, has, show, drop); indexes (create, describe: parameters are
// recorded and validated, but every search is exact, whatever the index);
// load and loading progress; aliases (create, alter, drop, resolved by every
// call as Milvus does); upsert; delete by expression; search with a filter;
// query with a filter, count(*), limit and the iterator's primary-key order;
// flush; manual compaction and its state.
//
// Deletion follows Milvus's model so that tests can tell erasure from
// hiding: Delete only tombstones rows (they vanish from searches and queries
// but stay in storage), Flush persists the tombstones, and ManualCompaction
// physically drops flushed tombstoned rows. StoredBytes exposes the storage
// so a test can check that an erased vector is really gone.
//
// Every read sees every earlier write (the strongest consistency), whatever
// level is requested; the requested level is recorded.
package milvustest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/index/embedded"
)

// Server is the stand-in. Start one with Start; stop it with Close.
type Server struct {
	milvuspb.UnimplementedMilvusServiceServer

	addr string
	srv  *grpc.Server
	lis  net.Listener

	mu          sync.Mutex
	store       *embedded.Index
	collections map[string]*coll // by Milvus name
	aliases     map[string]string
	nextID      int64
	ts          uint64
	log         []string
}

type coll struct {
	id          int64
	name        string
	inner       string // embedded collection name
	schema      *schemapb.CollectionSchema
	dim         int
	consistency commonpb.ConsistencyLevel
	index       map[string]string // index_type, metric_type, params
	loaded      bool
	models      map[string]string // pk -> model field
	tombstones  map[string]bool   // deleted, not yet compacted; true once flushed
	requested   []string          // consistency of each search and query, from its guarantee timestamp
}

// Start listens on a loopback port and serves until Close.
func Start() (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("milvustest: listen: %w", err)
	}
	store, err := embedded.New(embedded.Options{Shards: 1})
	if err != nil {
		lis.Close()
		return nil, err
	}
	s := &Server{
		addr:        lis.Addr().String(),
		lis:         lis,
		store:       store,
		collections: make(map[string]*coll),
		aliases:     make(map[string]string),
		srv:         grpc.NewServer(grpc.MaxRecvMsgSize(256 << 20)),
	}
	milvuspb.RegisterMilvusServiceServer(s.srv, s)
	go s.srv.Serve(lis)
	return s, nil
}

// Addr is the host:port to give the SDK.
func (s *Server) Addr() string { return s.addr }

// Close stops the server.
func (s *Server) Close() {
	s.srv.Stop()
	s.store.Close()
}

// Log lists the calls that change state, in order, e.g. "Flush facegate_x",
// "ManualCompaction facegate_x".
func (s *Server) Log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

// IndexParams returns the index parameters recorded for a collection.
func (s *Server) IndexParams(name string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.find(name)
	if c == nil {
		return nil
	}
	out := map[string]string{}
	for k, v := range c.index {
		out[k] = v
	}
	return out
}

// ConsistencyLevels returns the level a collection was created with and the
// levels its searches and queries asked for. The SDK encodes a request's
// level in its guarantee timestamp: 0 Strong, 1 Eventually, 2 Bounded, any
// other value a Session timestamp.
func (s *Server) ConsistencyLevels(name string) (collection commonpb.ConsistencyLevel, requested []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.find(name)
	if c == nil {
		return 0, nil
	}
	return c.consistency, append([]string(nil), c.requested...)
}

func consistencyOf(guarantee uint64) string {
	switch guarantee {
	case 0:
		return "Strong"
	case 1:
		return "Eventually"
	case 2:
		return "Bounded"
	}
	return "Session"
}

// Tombstones counts deleted rows not yet removed by compaction.
func (s *Server) Tombstones(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.find(name)
	if c == nil {
		return 0
	}
	return len(c.tombstones)
}

// StoredBytes serialises everything the stand-in stores (rows, ids,
// vectors, including tombstoned rows), for tests that search it for data
// that should have been erased.
func (s *Server) StoredBytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf bytes.Buffer
	s.store.WriteSnapshotTo(context.Background(), &buf, 0)
	for _, c := range s.collections {
		for pk, m := range c.models {
			buf.WriteString(pk + "=" + m + "\n")
		}
	}
	return buf.Bytes()
}

// ---- helpers ----

var okStatus = &commonpb.Status{ErrorCode: commonpb.ErrorCode_Success}

// Milvus error codes (merr) for the failures the stand-in reports.
const (
	codeCollectionNotFound = 100
	codeCollectionNotLoad  = 101
	codeIndexNotFound      = 700
	codeParameterInvalid   = 1100
	codeUnexpected         = 5
)

func fail(code int32, format string, args ...any) *commonpb.Status {
	return &commonpb.Status{ErrorCode: commonpb.ErrorCode_UnexpectedError, Code: code, Reason: fmt.Sprintf(format, args...)}
}

func notFound(name string) *commonpb.Status {
	return fail(codeCollectionNotFound, "collection not found[collection=%s]", name)
}

func (s *Server) find(name string) *coll {
	if t, ok := s.aliases[name]; ok {
		name = t
	}
	return s.collections[name]
}

func (s *Server) tick() uint64 {
	s.ts++
	return s.ts
}

func (c *coll) aliasesOf(s *Server) []string {
	var out []string
	for a, t := range s.aliases {
		if t == c.name {
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return out
}

var scalarFields = map[string]bool{"id": true, "person": true, "site": true, "photo": true, "model": true}

// checkSchema accepts only the schema pkg/index/milvus creates.
func checkSchema(sc *schemapb.CollectionSchema) (int, error) {
	want := map[string]schemapb.DataType{
		"id": schemapb.DataType_VarChar, "person": schemapb.DataType_VarChar, "site": schemapb.DataType_VarChar,
		"photo": schemapb.DataType_VarChar, "model": schemapb.DataType_VarChar, "vector": schemapb.DataType_FloatVector,
	}
	if len(sc.GetFields()) != len(want) {
		return 0, fmt.Errorf("the stand-in supports only the facegate schema (%d fields), got %d fields", len(want), len(sc.GetFields()))
	}
	dim := 0
	for _, f := range sc.GetFields() {
		t, ok := want[f.GetName()]
		if !ok || t != f.GetDataType() {
			return 0, fmt.Errorf("field %q of type %v is not in the facegate schema", f.GetName(), f.GetDataType())
		}
		if f.GetIsPrimaryKey() != (f.GetName() == "id") {
			return 0, fmt.Errorf("the primary key must be field id")
		}
		for _, kv := range f.GetTypeParams() {
			if f.GetName() == "vector" && kv.GetKey() == "dim" {
				d, err := strconv.Atoi(kv.GetValue())
				if err != nil {
					return 0, fmt.Errorf("dim %q: %w", kv.GetValue(), err)
				}
				dim = d
			}
		}
	}
	if dim < 1 || dim > index.MaxDim {
		return 0, fmt.Errorf("vector dim %d outside 1..%d", dim, index.MaxDim)
	}
	return dim, nil
}

// rows lists a collection's live rows (not tombstoned) matching preds,
// in primary-key order.
func (s *Server) rows(ctx context.Context, c *coll, preds []predicate) ([]index.TemplateInfo, error) {
	var out []index.TemplateInfo
	after := ""
	for {
		page, err := s.store.List(ctx, c.inner, index.ListOptions{After: after, Limit: index.MaxListLimit})
		if err != nil {
			return nil, err
		}
		for _, t := range page {
			if _, dead := c.tombstones[t.ID]; dead {
				continue
			}
			if matchAll(preds, t, c.models[t.ID]) {
				out = append(out, t)
			}
		}
		if len(page) < index.MaxListLimit {
			return out, nil
		}
		after = page[len(page)-1].ID
	}
}

func fieldValue(t index.TemplateInfo, model, field string) string {
	switch field {
	case "id":
		return t.ID
	case "person":
		return t.Person
	case "site":
		return t.Site
	case "photo":
		return t.Photo
	case "model":
		return model
	}
	return ""
}

func matchAll(preds []predicate, t index.TemplateInfo, model string) bool {
	for _, p := range preds {
		if !p.match(fieldValue(t, model, p.field)) {
			return false
		}
	}
	return true
}

func varchar(name string, vals []string) *schemapb.FieldData {
	return &schemapb.FieldData{
		Type:      schemapb.DataType_VarChar,
		FieldName: name,
		Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{
			Data: &schemapb.ScalarField_StringData{StringData: &schemapb.StringArray{Data: vals}},
		}},
	}
}

func kv(pairs []*commonpb.KeyValuePair) map[string]string {
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		m[p.GetKey()] = p.GetValue()
	}
	return m
}

// ---- service ----

// Connect answers the SDK's handshake.
func (s *Server) Connect(ctx context.Context, req *milvuspb.ConnectRequest) (*milvuspb.ConnectResponse, error) {
	return &milvuspb.ConnectResponse{
		Status:     okStatus,
		ServerInfo: &commonpb.ServerInfo{BuildTags: "facegate-milvustest (a stand-in, not Milvus)"},
		Identifier: 1,
	}, nil
}

// CreateCollection creates a collection with the facegate schema.
func (s *Server) CreateCollection(ctx context.Context, req *milvuspb.CreateCollectionRequest) (*commonpb.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := req.GetCollectionName()
	if s.collections[name] != nil || s.aliases[name] != "" {
		return fail(codeParameterInvalid, "collection %s already exists", name), nil
	}
	sc := &schemapb.CollectionSchema{}
	if err := proto.Unmarshal(req.GetSchema(), sc); err != nil {
		return fail(codeParameterInvalid, "schema: %v", err), nil
	}
	if sc.GetName() != name {
		return fail(codeParameterInvalid, "schema name %q differs from collection name %q", sc.GetName(), name), nil
	}
	dim, err := checkSchema(sc)
	if err != nil {
		return fail(codeParameterInvalid, "%v", err), nil
	}
	s.nextID++
	c := &coll{
		id: s.nextID, name: name, inner: fmt.Sprintf("c%d", s.nextID), schema: sc, dim: dim,
		consistency: req.GetConsistencyLevel(), models: map[string]string{}, tombstones: map[string]bool{},
	}
	if err := s.store.CreateCollection(ctx, index.Collection{Name: c.inner, Dim: dim}); err != nil {
		return fail(codeUnexpected, "%v", err), nil
	}
	s.collections[name] = c
	s.log = append(s.log, "CreateCollection "+name)
	return okStatus, nil
}

// DescribeCollection resolves aliases, as Milvus does.
func (s *Server) DescribeCollection(ctx context.Context, req *milvuspb.DescribeCollectionRequest) (*milvuspb.DescribeCollectionResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.find(req.GetCollectionName())
	if c == nil {
		return &milvuspb.DescribeCollectionResponse{Status: notFound(req.GetCollectionName())}, nil
	}
	return &milvuspb.DescribeCollectionResponse{
		Status:           okStatus,
		Schema:           c.schema,
		CollectionID:     c.id,
		CollectionName:   c.name,
		ShardsNum:        1,
		Aliases:          c.aliasesOf(s),
		ConsistencyLevel: c.consistency,
	}, nil
}

// HasCollection reports whether a collection (or alias) exists.
func (s *Server) HasCollection(ctx context.Context, req *milvuspb.HasCollectionRequest) (*milvuspb.BoolResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &milvuspb.BoolResponse{Status: okStatus, Value: s.find(req.GetCollectionName()) != nil}, nil
}

// ShowCollections lists collections (not aliases).
func (s *Server) ShowCollections(ctx context.Context, req *milvuspb.ShowCollectionsRequest) (*milvuspb.ShowCollectionsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &milvuspb.ShowCollectionsResponse{Status: okStatus}
	names := make([]string, 0, len(s.collections))
	for n := range s.collections {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := s.collections[n]
		resp.CollectionNames = append(resp.CollectionNames, n)
		resp.CollectionIds = append(resp.CollectionIds, c.id)
		pct := int64(0)
		if c.loaded {
			pct = 100
		}
		resp.InMemoryPercentages = append(resp.InMemoryPercentages, pct)
	}
	return resp, nil
}

// DropCollection refuses a collection that aliases point at, as Milvus does.
func (s *Server) DropCollection(ctx context.Context, req *milvuspb.DropCollectionRequest) (*commonpb.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := req.GetCollectionName()
	c := s.collections[name]
	if c == nil {
		return notFound(name), nil
	}
	if as := c.aliasesOf(s); len(as) > 0 {
		return fail(codeParameterInvalid, "unable to drop collection %s: it has aliases %v", name, as), nil
	}
	if err := s.store.DropCollection(ctx, c.inner); err != nil {
		return fail(codeUnexpected, "%v", err), nil
	}
	delete(s.collections, name)
	s.log = append(s.log, "DropCollection "+name)
	return okStatus, nil
}

var indexTypes = map[string]bool{"HNSW": true, "IVF_FLAT": true, "IVF_SQ8": true, "FLAT": true}

// CreateIndex validates and records the index; searches stay exact.
func (s *Server) CreateIndex(ctx context.Context, req *milvuspb.CreateIndexRequest) (*commonpb.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.find(req.GetCollectionName())
	if c == nil {
		return notFound(req.GetCollectionName()), nil
	}
	if req.GetFieldName() != "vector" {
		return fail(codeParameterInvalid, "the stand-in indexes only the vector field, not %q", req.GetFieldName()), nil
	}
	p := kv(req.GetExtraParams())
	if !indexTypes[p["index_type"]] {
		return fail(codeParameterInvalid, "index type %q", p["index_type"]), nil
	}
	if p["metric_type"] != "L2" && p["metric_type"] != "IP" {
		return fail(codeParameterInvalid, "metric type %q", p["metric_type"]), nil
	}
	var params map[string]any
	if err := json.Unmarshal([]byte(p["params"]), &params); err != nil && p["params"] != "" {
		return fail(codeParameterInvalid, "index params %q: %v", p["params"], err), nil
	}
	c.index = p
	s.log = append(s.log, fmt.Sprintf("CreateIndex %s %s %s %s", c.name, p["index_type"], p["metric_type"], p["params"]))
	return okStatus, nil
}

// DescribeIndex reports the index as built.
func (s *Server) DescribeIndex(ctx context.Context, req *milvuspb.DescribeIndexRequest) (*milvuspb.DescribeIndexResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.find(req.GetCollectionName())
	if c == nil {
		return &milvuspb.DescribeIndexResponse{Status: notFound(req.GetCollectionName())}, nil
	}
	if c.index == nil {
		return &milvuspb.DescribeIndexResponse{Status: fail(codeIndexNotFound, "index not found[collection=%s]", c.name)}, nil
	}
	var params []*commonpb.KeyValuePair
	for k, v := range c.index {
		params = append(params, &commonpb.KeyValuePair{Key: k, Value: v})
	}
	return &milvuspb.DescribeIndexResponse{Status: okStatus, IndexDescriptions: []*milvuspb.IndexDescription{{
		IndexName: "vector", FieldName: "vector", Params: params, State: commonpb.IndexState_Finished,
	}}}, nil
}

// LoadCollection loads at once; Milvus refuses to load an unindexed collection.
func (s *Server) LoadCollection(ctx context.Context, req *milvuspb.LoadCollectionRequest) (*commonpb.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.find(req.GetCollectionName())
	if c == nil {
		return notFound(req.GetCollectionName()), nil
	}
	if c.index == nil {
		return fail(codeIndexNotFound, "there is no vector index on collection %s, please create index firstly", c.name), nil
	}
	c.loaded = true
	return okStatus, nil
}

// GetLoadingProgress reports 100% once loaded.
func (s *Server) GetLoadingProgress(ctx context.Context, req *milvuspb.GetLoadingProgressRequest) (*milvuspb.GetLoadingProgressResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.find(req.GetCollectionName())
	if c == nil {
		return &milvuspb.GetLoadingProgressResponse{Status: notFound(req.GetCollectionName())}, nil
	}
	p := int64(0)
	if c.loaded {
		p = 100
	}
	return &milvuspb.GetLoadingProgressResponse{Status: okStatus, Progress: p}, nil
}

// CreateAlias creates an alias; the name must be free.
func (s *Server) CreateAlias(ctx context.Context, req *milvuspb.CreateAliasRequest) (*commonpb.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := req.GetAlias()
	if s.collections[a] != nil || s.aliases[a] != "" {
		return fail(codeParameterInvalid, "alias %s: the name is in use", a), nil
	}
	if s.collections[req.GetCollectionName()] == nil {
		return notFound(req.GetCollectionName()), nil
	}
	s.aliases[a] = req.GetCollectionName()
	s.log = append(s.log, "CreateAlias "+a+" "+req.GetCollectionName())
	return okStatus, nil
}

// AlterAlias repoints an existing alias, atomically.
func (s *Server) AlterAlias(ctx context.Context, req *milvuspb.AlterAliasRequest) (*commonpb.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := req.GetAlias()
	if s.aliases[a] == "" {
		return fail(codeParameterInvalid, "alias %s does not exist", a), nil
	}
	if s.collections[req.GetCollectionName()] == nil {
		return notFound(req.GetCollectionName()), nil
	}
	s.aliases[a] = req.GetCollectionName()
	s.log = append(s.log, "AlterAlias "+a+" "+req.GetCollectionName())
	return okStatus, nil
}

// DropAlias removes an alias.
func (s *Server) DropAlias(ctx context.Context, req *milvuspb.DropAliasRequest) (*commonpb.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aliases[req.GetAlias()] == "" {
		return fail(codeParameterInvalid, "alias %s does not exist", req.GetAlias()), nil
	}
	delete(s.aliases, req.GetAlias())
	s.log = append(s.log, "DropAlias "+req.GetAlias())
	return okStatus, nil
}

// Upsert inserts or replaces rows by primary key.
func (s *Server) Upsert(ctx context.Context, req *milvuspb.UpsertRequest) (*milvuspb.MutationResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.find(req.GetCollectionName())
	if c == nil {
		return &milvuspb.MutationResult{Status: notFound(req.GetCollectionName())}, nil
	}
	n := int(req.GetNumRows())
	strs := map[string][]string{}
	var vecs []float32
	for _, fd := range req.GetFieldsData() {
		switch fd.GetType() {
		case schemapb.DataType_VarChar:
			strs[fd.GetFieldName()] = fd.GetScalars().GetStringData().GetData()
		case schemapb.DataType_FloatVector:
			if fd.GetFieldName() != "vector" || int(fd.GetVectors().GetDim()) != c.dim {
				return &milvuspb.MutationResult{Status: fail(codeParameterInvalid, "vector field %q of dim %d, collection has dim %d", fd.GetFieldName(), fd.GetVectors().GetDim(), c.dim)}, nil
			}
			vecs = fd.GetVectors().GetFloatVector().GetData()
		default:
			return &milvuspb.MutationResult{Status: fail(codeParameterInvalid, "field %q of type %v", fd.GetFieldName(), fd.GetType())}, nil
		}
	}
	for f := range scalarFields {
		if len(strs[f]) != n {
			return &milvuspb.MutationResult{Status: fail(codeParameterInvalid, "field %q has %d rows, want %d", f, len(strs[f]), n)}, nil
		}
	}
	if len(vecs) != n*c.dim {
		return &milvuspb.MutationResult{Status: fail(codeParameterInvalid, "%d vector values for %d rows of dim %d", len(vecs), n, c.dim)}, nil
	}
	ts := make([]index.Template, n)
	for i := range ts {
		ts[i] = index.Template{
			TemplateInfo: index.TemplateInfo{ID: strs["id"][i], Person: strs["person"][i], Site: strs["site"][i], Photo: strs["photo"][i]},
			Vector:       vecs[i*c.dim : (i+1)*c.dim],
		}
	}
	if err := s.store.Upsert(ctx, c.inner, ts); err != nil {
		return &milvuspb.MutationResult{Status: fail(codeParameterInvalid, "%v", err)}, nil
	}
	for i, t := range ts {
		c.models[t.ID] = strs["model"][i]
		delete(c.tombstones, t.ID)
	}
	return &milvuspb.MutationResult{
		Status:    okStatus,
		IDs:       &schemapb.IDs{IdField: &schemapb.IDs_StrId{StrId: &schemapb.StringArray{Data: strs["id"]}}},
		UpsertCnt: int64(n),
		Timestamp: s.tick(),
	}, nil
}

// Delete tombstones the rows matching the expression.
func (s *Server) Delete(ctx context.Context, req *milvuspb.DeleteRequest) (*milvuspb.MutationResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.find(req.GetCollectionName())
	if c == nil {
		return &milvuspb.MutationResult{Status: notFound(req.GetCollectionName())}, nil
	}
	preds, err := parseExpr(req.GetExpr(), scalarFields)
	if err != nil || len(preds) == 0 {
		return &milvuspb.MutationResult{Status: fail(codeParameterInvalid, "delete: %v (an expression is required)", err)}, nil
	}
	rows, err := s.rows(ctx, c, preds)
	if err != nil {
		return &milvuspb.MutationResult{Status: fail(codeUnexpected, "%v", err)}, nil
	}
	for _, r := range rows {
		c.tombstones[r.ID] = false
	}
	s.log = append(s.log, fmt.Sprintf("Delete %s %d", c.name, len(rows)))
	return &milvuspb.MutationResult{Status: okStatus, DeleteCnt: int64(len(rows)), Timestamp: s.tick()}, nil
}

// Flush persists tombstones, making them eligible for compaction.
func (s *Server) Flush(ctx context.Context, req *milvuspb.FlushRequest) (*milvuspb.FlushResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &milvuspb.FlushResponse{Status: okStatus, CollSegIDs: map[string]*schemapb.LongArray{}}
	for _, name := range req.GetCollectionNames() {
		c := s.find(name)
		if c == nil {
			return &milvuspb.FlushResponse{Status: notFound(name)}, nil
		}
		for pk := range c.tombstones {
			c.tombstones[pk] = true
		}
		// No segment ids: the SDK has nothing to wait for.
		resp.CollSegIDs[name] = &schemapb.LongArray{}
		s.log = append(s.log, "Flush "+c.name)
	}
	return resp, nil
}

// ManualCompaction physically removes flushed tombstoned rows.
func (s *Server) ManualCompaction(ctx context.Context, req *milvuspb.ManualCompactionRequest) (*milvuspb.ManualCompactionResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var c *coll
	for _, x := range s.collections {
		if x.id == req.GetCollectionID() {
			c = x
		}
	}
	if c == nil {
		return &milvuspb.ManualCompactionResponse{Status: fail(codeCollectionNotFound, "collection %d not found", req.GetCollectionID())}, nil
	}
	var drop []string
	for pk, flushed := range c.tombstones {
		if flushed {
			drop = append(drop, pk)
		}
	}
	if _, err := s.store.DeleteTemplates(ctx, c.inner, drop); err != nil {
		return &milvuspb.ManualCompactionResponse{Status: fail(codeUnexpected, "%v", err)}, nil
	}
	for _, pk := range drop {
		delete(c.tombstones, pk)
		delete(c.models, pk)
	}
	s.nextID++
	s.log = append(s.log, fmt.Sprintf("ManualCompaction %s %d", c.name, len(drop)))
	return &milvuspb.ManualCompactionResponse{Status: okStatus, CompactionID: s.nextID, CompactionPlanCount: 1}, nil
}

// GetCompactionState reports every compaction as completed: they run
// synchronously here.
func (s *Server) GetCompactionState(ctx context.Context, req *milvuspb.GetCompactionStateRequest) (*milvuspb.GetCompactionStateResponse, error) {
	return &milvuspb.GetCompactionStateResponse{Status: okStatus, State: commonpb.CompactionState_Completed, CompletedPlanNo: 1}, nil
}

// Search runs an exact search on the embedded index, filtered by an
// expression of person/site equalities, and answers in Milvus's terms.
func (s *Server) Search(ctx context.Context, req *milvuspb.SearchRequest) (*milvuspb.SearchResults, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.find(req.GetCollectionName())
	if c == nil {
		return &milvuspb.SearchResults{Status: notFound(req.GetCollectionName())}, nil
	}
	if !c.loaded {
		return &milvuspb.SearchResults{Status: fail(codeCollectionNotLoad, "collection not loaded[collection=%s]", c.name)}, nil
	}
	c.requested = append(c.requested, consistencyOf(req.GetGuaranteeTimestamp()))
	p := kv(req.GetSearchParams())
	k, err := strconv.Atoi(p["topk"])
	if err != nil || k < 1 || k > 16384 {
		return &milvuspb.SearchResults{Status: fail(codeParameterInvalid, "topk %q", p["topk"])}, nil
	}
	if p["anns_field"] != "vector" {
		return &milvuspb.SearchResults{Status: fail(codeParameterInvalid, "anns_field %q", p["anns_field"])}, nil
	}
	metric := p["metric_type"]
	if metric != c.index["metric_type"] {
		return &milvuspb.SearchResults{Status: fail(codeParameterInvalid, "metric type not match: search %q, index %q", metric, c.index["metric_type"])}, nil
	}
	if p["offset"] != "" && p["offset"] != "0" || p["group_by_field"] != "" {
		return &milvuspb.SearchResults{Status: fail(codeParameterInvalid, "offset and grouping are outside the stand-in's subset")}, nil
	}
	opts := index.SearchOptions{K: min(k+len(c.tombstones), index.MaxK)}
	if k+len(c.tombstones) > index.MaxK {
		return &milvuspb.SearchResults{Status: fail(codeParameterInvalid, "topk %d plus %d uncompacted deletes exceeds the stand-in's limit", k, len(c.tombstones))}, nil
	}
	preds, err := parseExpr(req.GetDsl(), scalarFields)
	if err != nil {
		return &milvuspb.SearchResults{Status: fail(codeParameterInvalid, "%v", err)}, nil
	}
	for _, pr := range preds {
		switch {
		case pr.op == "==" && pr.field == "person":
			opts.Person = pr.values[0]
		case pr.op == "==" && pr.field == "site":
			opts.Site = pr.values[0]
		default:
			return &milvuspb.SearchResults{Status: fail(codeParameterInvalid, "search filter %s %s: the stand-in supports person/site equality only", pr.field, pr.op)}, nil
		}
	}
	var phg commonpb.PlaceholderGroup
	if err := proto.Unmarshal(req.GetPlaceholderGroup(), &phg); err != nil || len(phg.GetPlaceholders()) != 1 {
		return &milvuspb.SearchResults{Status: fail(codeParameterInvalid, "placeholder group: %v", err)}, nil
	}
	ph := phg.GetPlaceholders()[0]
	if ph.GetType() != commonpb.PlaceholderType_FloatVector {
		return &milvuspb.SearchResults{Status: fail(codeParameterInvalid, "placeholder type %v", ph.GetType())}, nil
	}
	queries := make([][]float32, len(ph.GetValues()))
	for i, b := range ph.GetValues() {
		if len(b) != 4*c.dim {
			return &milvuspb.SearchResults{Status: fail(codeParameterInvalid, "query %d has %d bytes, want dim %d", i, len(b), c.dim)}, nil
		}
		q := make([]float32, c.dim)
		for j := range q {
			q[j] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*j:]))
		}
		queries[i] = q
	}
	results, err := s.store.SearchBatch(ctx, c.inner, queries, opts)
	if err != nil {
		return &milvuspb.SearchResults{Status: fail(codeParameterInvalid, "%v", err)}, nil
	}
	out := &schemapb.SearchResultData{NumQueries: int64(len(queries)), TopK: int64(k)}
	var ids, persons, sites, photos []string
	for _, r := range results {
		n := 0
		for _, h := range r.Hits {
			if _, dead := c.tombstones[h.ID]; dead || n == k {
				continue
			}
			n++
			ids, persons, sites, photos = append(ids, h.ID), append(persons, h.Person), append(sites, h.Site), append(photos, h.Photo)
			d := float64(h.Distance)
			if metric == "L2" {
				out.Scores = append(out.Scores, float32(d*d)) // Milvus's L2 is squared
			} else {
				out.Scores = append(out.Scores, float32(1-d*d/2)) // inner product of unit vectors
			}
		}
		out.Topks = append(out.Topks, int64(n))
	}
	out.Ids = &schemapb.IDs{IdField: &schemapb.IDs_StrId{StrId: &schemapb.StringArray{Data: ids}}}
	for _, f := range req.GetOutputFields() {
		switch f {
		case "person":
			out.FieldsData = append(out.FieldsData, varchar(f, persons))
		case "site":
			out.FieldsData = append(out.FieldsData, varchar(f, sites))
		case "photo":
			out.FieldsData = append(out.FieldsData, varchar(f, photos))
		default:
			return &milvuspb.SearchResults{Status: fail(codeParameterInvalid, "output field %q is outside the stand-in's subset", f)}, nil
		}
	}
	out.OutputFields = req.GetOutputFields()
	return &milvuspb.SearchResults{Status: okStatus, Results: out, CollectionName: c.name}, nil
}

// Query answers count(*) or lists scalar fields of matching rows in
// primary-key order, honouring limit and offset.
func (s *Server) Query(ctx context.Context, req *milvuspb.QueryRequest) (*milvuspb.QueryResults, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.find(req.GetCollectionName())
	if c == nil {
		return &milvuspb.QueryResults{Status: notFound(req.GetCollectionName())}, nil
	}
	if !c.loaded {
		return &milvuspb.QueryResults{Status: fail(codeCollectionNotLoad, "collection not loaded[collection=%s]", c.name)}, nil
	}
	c.requested = append(c.requested, consistencyOf(req.GetGuaranteeTimestamp()))
	preds, err := parseExpr(req.GetExpr(), scalarFields)
	if err != nil {
		return &milvuspb.QueryResults{Status: fail(codeParameterInvalid, "%v", err)}, nil
	}
	rows, err := s.rows(ctx, c, preds)
	if err != nil {
		return &milvuspb.QueryResults{Status: fail(codeUnexpected, "%v", err)}, nil
	}
	out := req.GetOutputFields()
	if len(out) == 1 && strings.EqualFold(out[0], "count(*)") {
		return &milvuspb.QueryResults{Status: okStatus, CollectionName: c.name, OutputFields: out, FieldsData: []*schemapb.FieldData{{
			Type: schemapb.DataType_Int64, FieldName: "count(*)",
			Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: []int64{int64(len(rows))}}}}},
		}}}, nil
	}
	p := kv(req.GetQueryParams())
	limit, offset := -1, 0
	if v, ok := p["limit"]; ok {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 {
			return &milvuspb.QueryResults{Status: fail(codeParameterInvalid, "limit %q", v)}, nil
		}
	}
	if v, ok := p["offset"]; ok {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			return &milvuspb.QueryResults{Status: fail(codeParameterInvalid, "offset %q", v)}, nil
		}
	}
	if len(preds) == 0 && limit < 0 {
		return &milvuspb.QueryResults{Status: fail(codeParameterInvalid, "empty expression should be used with limit")}, nil
	}
	rows = rows[min(offset, len(rows)):]
	if limit >= 0 && len(rows) > limit {
		rows = rows[:limit]
	}
	resp := &milvuspb.QueryResults{Status: okStatus, CollectionName: c.name, OutputFields: out}
	for _, f := range out {
		if !scalarFields[f] {
			return &milvuspb.QueryResults{Status: fail(codeParameterInvalid, "output field %q is outside the stand-in's subset", f)}, nil
		}
		vals := make([]string, len(rows))
		for i, r := range rows {
			vals[i] = fieldValue(r, c.models[r.ID], f)
		}
		resp.FieldsData = append(resp.FieldsData, varchar(f, vals))
	}
	return resp, nil
}
