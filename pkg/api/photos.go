package api

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strings"

	"github.com/google/uuid"

	"github.com/facegate/facegate/pkg/apiauth"
	"github.com/facegate/facegate/pkg/directory"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/sealed"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// upload is one file of a multipart request.
type upload struct {
	field, name string
	data        []byte
	mediaType   string
	sha256      string
}

// form is a parsed multipart request: its files and its text fields.
type form struct {
	files  []upload
	fields map[string]string
}

const maxFieldLen = 256

// readForm reads a multipart/form-data body: files under fileField (at
// most maxFiles, each at most MaxPhotoSize bytes) and the text fields in
// allowed. Anything else is refused, so a typo is an error rather than an
// ignored field.
func readForm(r *http.Request, fileField string, maxFiles int, allowed ...string) (*form, error) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "multipart/form-data" {
		return nil, errorf(http.StatusUnsupportedMediaType, "Content-Type %q: want multipart/form-data", ct)
	}
	// Bound the whole body as well as each part, so a stream of small
	// parts cannot run on forever.
	r.Body = http.MaxBytesReader(nil, r.Body, int64(maxFiles)*(MaxPhotoSize+64<<10)+64<<10)
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "body: %v", err)
	}
	f := &form{fields: map[string]string{}}
	tooLarge := func(err error) bool {
		var mbe *http.MaxBytesError
		return errors.As(err, &mbe)
	}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			if tooLarge(err) {
				return nil, errorf(http.StatusRequestEntityTooLarge, "body: too large")
			}
			return nil, errorf(http.StatusBadRequest, "body: malformed multipart: %v", err)
		}
		name := part.FormName()
		switch {
		case name == fileField:
			if len(f.files) == maxFiles {
				return nil, errorf(http.StatusRequestEntityTooLarge, "%s: more than %d files", fileField, maxFiles)
			}
			field := fmt.Sprintf("%s[%d]", fileField, len(f.files))
			data, err := io.ReadAll(io.LimitReader(part, MaxPhotoSize+1))
			if err != nil {
				if tooLarge(err) {
					return nil, errorf(http.StatusRequestEntityTooLarge, "body: too large")
				}
				return nil, errorf(http.StatusBadRequest, "%s: %v", field, err)
			}
			if len(data) > MaxPhotoSize {
				return nil, errorf(http.StatusRequestEntityTooLarge, "%s: larger than %d bytes", field, MaxPhotoSize)
			}
			if len(data) == 0 {
				return nil, errorf(http.StatusBadRequest, "%s: empty file", field)
			}
			sum := sha256.Sum256(data)
			f.files = append(f.files, upload{field: field, name: part.FileName(), data: data,
				mediaType: http.DetectContentType(data), sha256: hex.EncodeToString(sum[:])})
		case contains(allowed, name):
			if _, dup := f.fields[name]; dup {
				return nil, errorf(http.StatusBadRequest, "%s: given twice", name)
			}
			v, err := io.ReadAll(io.LimitReader(part, maxFieldLen+1))
			if err != nil {
				return nil, errorf(http.StatusBadRequest, "%s: %v", name, err)
			}
			if len(v) > maxFieldLen {
				return nil, errorf(http.StatusBadRequest, "%s: longer than %d bytes", name, maxFieldLen)
			}
			f.fields[name] = string(v)
		default:
			return nil, errorf(http.StatusBadRequest, "%s: unknown form field", name)
		}
	}
	if len(f.files) == 0 {
		return nil, errorf(http.StatusBadRequest, "%s: required: at least one image file", fileField)
	}
	return f, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// analyzeOne runs the face engine on one upload and insists on exactly one
// face that passes the quality gate (422 otherwise, naming the reason).
func (s *Server) analyzeOne(c *call, u upload) (face.Face, error) {
	if u.mediaType != "image/jpeg" && u.mediaType != "image/png" {
		return face.Face{}, errorf(http.StatusUnprocessableEntity, "%s: not a JPEG or PNG image (detected %s)", u.field, u.mediaType)
	}
	select {
	case s.analyses <- struct{}{}:
	case <-c.ctx.Done():
		return face.Face{}, c.ctx.Err()
	}
	res, err := s.cfg.Engine.Analyze(c.ctx, u.data)
	<-s.analyses
	if err != nil {
		if errors.Is(err, imaging.ErrEmpty) || errors.Is(err, imaging.ErrTooLarge) ||
			errors.Is(err, imaging.ErrUnsupportedFormat) || errors.Is(err, imaging.ErrCorrupt) {
			return face.Face{}, errorf(http.StatusUnprocessableEntity, "%s: cannot decode image: %v", u.field, err)
		}
		return face.Face{}, fmt.Errorf("api: analyze %s: %w", u.field, err)
	}
	switch n := len(res.Faces) + res.Dropped; {
	case n == 0:
		return face.Face{}, errorf(http.StatusUnprocessableEntity, "%s: no face found", u.field)
	case n > 1:
		return face.Face{}, errorf(http.StatusUnprocessableEntity, "%s: several faces found (%d); enrolment and matching need exactly one", u.field, n)
	}
	f := res.Faces[0]
	if !f.Quality.OK {
		return face.Face{}, errorf(http.StatusUnprocessableEntity, "%s: face fails the quality check: %s", u.field, strings.Join(f.Quality.Reasons, "; "))
	}
	if len(f.Encoding) != s.cfg.Engine.Dim() {
		return face.Face{}, fmt.Errorf("api: analyze %s: encoding of dimension %d, engine has %d", u.field, len(f.Encoding), s.cfg.Engine.Dim())
	}
	return f, nil
}

// PhotosResponse is the body of a successful photo upload.
type PhotosResponse struct {
	Photos []AddedPhoto `json:"photos"`
}

// AddedPhoto is one stored photo.
type AddedPhoto struct {
	PhotoID        string  `json:"photo_id"`
	ContentSHA256  string  `json:"content_sha256"`
	MediaType      string  `json:"media_type"`
	EmbeddingSpace string  `json:"embedding_space"`
	FaceBox        Box     `json:"face_box"`
	Sharpness      float64 `json:"sharpness"`
	YawDegrees     float64 `json:"yaw_degrees"`
}

// Box is a face's bounding box in pixels.
type Box struct {
	X      float64 `json:"x"`
	Y      float64 `json:"y"`
	Width  float64 `json:"width"`
	Height float64 `json:"height"`
}

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func qualityOf(f face.Face) *facegatev1.Quality {
	sc := f.Quality.Scores
	q := &facegatev1.Quality{Passed: f.Quality.OK, Sharpness: float32(finite(sc.Sharpness)),
		YawDegrees: float32(finite(sc.Yaw)), PitchDegrees: float32(finite(sc.Pitch)), RollDegrees: float32(finite(sc.Roll)),
		InterEyePixels: float32(finite(sc.InterOcular))}
	if f.Quality.OK {
		q.Overall = 1
	}
	return q
}

func (s *Server) addPhotos(c *call) (int, any, error) {
	p, err := s.lookupPerson(c, apiauth.PermPhotos)
	if err != nil {
		return 0, nil, err
	}
	fm, err := readForm(c.r, "photo", MaxPhotos)
	if err != nil {
		return 0, nil, err
	}
	space := s.cfg.Engine.Space()
	// Every photo is checked before anything is stored, so a request is
	// all or nothing as far as the caller's mistakes go.
	seen := map[string]string{}
	for _, ph := range p.Photos {
		seen[ph.ContentSHA256] = "an enrolled photo"
	}
	faces := make([]face.Face, len(fm.files))
	for i, u := range fm.files {
		if prev, dup := seen[u.sha256]; dup {
			return 0, nil, errorf(http.StatusConflict, "%s: same content as %s of this person", u.field, prev)
		}
		seen[u.sha256] = u.field
		if faces[i], err = s.analyzeOne(c, u); err != nil {
			return 0, nil, err
		}
	}
	out := PhotosResponse{}
	var last uint64
	for i, u := range fm.files {
		f := faces[i]
		photoID := uuid.NewString()
		plain := directory.EncodeVector(f.Encoding)
		tmpl, err := sealed.Seal(c.ctx, s.cfg.Keys, plain, sealed.TemplateContext(space, photoID))
		clear(plain)
		if err != nil {
			return 0, nil, fmt.Errorf("api: seal template: %w", err)
		}
		ref, err := s.cfg.Photos.Put(c.ctx, p.ID, photoID, u.data)
		if err != nil {
			return 0, nil, err
		}
		box := &facegatev1.Box{X: float32(f.Box.X), Y: float32(f.Box.Y), Width: float32(f.Box.W), Height: float32(f.Box.H)}
		ch := &facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_PhotoAdd{PhotoAdd: &facegatev1.PhotoAdd{
			PersonId: p.ID, PhotoId: photoID, ContentSha256: u.sha256, MediaType: u.mediaType, StorageRef: ref,
			FaceBox: box, SealedTemplate: tmpl, EmbeddingSpace: space, EmbeddingDimension: uint32(len(f.Encoding)),
			Quality: qualityOf(f)}}}
		seq, err := s.publish(c, ch, false)
		if err != nil {
			// The sealed photo without its PhotoAdd would be an orphan.
			_ = s.cfg.Photos.Delete(c.ctx, p.ID, photoID)
			return 0, nil, err
		}
		last = seq
		out.Photos = append(out.Photos, AddedPhoto{PhotoID: photoID, ContentSHA256: u.sha256, MediaType: u.mediaType,
			EmbeddingSpace: space, FaceBox: Box{X: f.Box.X, Y: f.Box.Y, Width: f.Box.W, Height: f.Box.H},
			Sharpness: finite(f.Quality.Scores.Sharpness), YawDegrees: finite(f.Quality.Scores.Yaw)})
	}
	// Not "photos": the audit log refuses payload keys naming photo data
	// (audit.ErrForbiddenPayload) and would record the call as malformed.
	c.attr("added", fmt.Sprint(len(out.Photos)))
	if err := s.waitApplied(c, last); err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, out, nil
}

func (s *Server) removePhoto(c *call) (int, any, error) {
	p, err := s.lookupPerson(c, apiauth.PermPhotos)
	if err != nil {
		return 0, nil, err
	}
	photoID, err := pathID(c, "photo", "photo_id")
	if err != nil {
		return 0, nil, err
	}
	sha := ""
	found := false
	for _, ph := range p.Photos {
		if ph.ID == photoID {
			sha, found = ph.ContentSHA256, true
		}
	}
	if !found {
		return 0, nil, errorf(http.StatusNotFound, "photo_id: this person has no such photo")
	}
	ch := &facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_PhotoRemove{PhotoRemove: &facegatev1.PhotoRemove{
		PersonId: p.ID, PhotoId: photoID, ContentSha256: sha}}}
	if err := s.publishAll(c, ch); err != nil {
		return 0, nil, err
	}
	if err := s.cfg.Photos.Delete(c.ctx, p.ID, photoID); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}
