package milvustest

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// The subset of Milvus's boolean expression language that pkg/index/milvus
// sends: a conjunction ("and" or "&&") of comparisons of a VarChar field with
// string literals, optionally parenthesised:
//
//	person == "p1" and site == "s"
//	id in ["a", "b"]
//	(person == "p1") and id > "t-0007"
//
// Anything else is rejected, so a backend change that needs more of the
// language shows up as a test failure rather than a silently wrong answer.

type predicate struct {
	field  string
	op     string // "==", "!=", ">", ">=", "<", "<=", "in"
	values []string
}

func (p predicate) match(v string) bool {
	switch p.op {
	case "==":
		return v == p.values[0]
	case "!=":
		return v != p.values[0]
	case ">":
		return v > p.values[0]
	case ">=":
		return v >= p.values[0]
	case "<":
		return v < p.values[0]
	case "<=":
		return v <= p.values[0]
	case "in":
		for _, x := range p.values {
			if v == x {
				return true
			}
		}
	}
	return false
}

type token struct {
	kind string // "ident", "string", "op", "(", ")", "[", "]", ",", "and"
	text string
}

func tokenize(s string) ([]token, error) {
	var out []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case c == '(' || c == ')' || c == '[' || c == ']' || c == ',':
			out = append(out, token{kind: string(c), text: string(c)})
			i++
		case c == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			v, err := strconv.Unquote(s[i : j+1])
			if err != nil {
				return nil, fmt.Errorf("string at %d: %w", i, err)
			}
			out = append(out, token{kind: "string", text: v})
			i = j + 1
		case c == '&' && strings.HasPrefix(s[i:], "&&"):
			out = append(out, token{kind: "and", text: "&&"})
			i += 2
		case strings.ContainsRune("=!<>", rune(c)):
			j := i + 1
			if j < len(s) && s[j] == '=' {
				j++
			}
			op := s[i:j]
			if op == "=" || op == "!" {
				return nil, fmt.Errorf("unknown operator %q", op)
			}
			out = append(out, token{kind: "op", text: op})
			i = j
		case unicode.IsLetter(rune(c)) || c == '_':
			j := i
			for j < len(s) && (unicode.IsLetter(rune(s[j])) || unicode.IsDigit(rune(s[j])) || s[j] == '_') {
				j++
			}
			w := s[i:j]
			switch strings.ToLower(w) {
			case "and":
				out = append(out, token{kind: "and", text: w})
			case "in":
				out = append(out, token{kind: "op", text: "in"})
			case "or", "not", "like":
				return nil, fmt.Errorf("operator %q is outside the stand-in's subset", w)
			default:
				out = append(out, token{kind: "ident", text: w})
			}
			i = j
		default:
			return nil, fmt.Errorf("unexpected %q at %d", c, i)
		}
	}
	return out, nil
}

// parseExpr parses an expression into a conjunction of predicates on the
// given fields. An empty expression matches everything.
func parseExpr(s string, fields map[string]bool) ([]predicate, error) {
	toks, err := tokenize(s)
	if err != nil {
		return nil, fmt.Errorf("expression %q: %w", s, err)
	}
	p := &parser{toks: toks, fields: fields}
	if len(toks) == 0 {
		return nil, nil
	}
	preds, err := p.conj()
	if err == nil && p.pos != len(toks) {
		err = fmt.Errorf("unexpected %q", toks[p.pos].text)
	}
	if err != nil {
		return nil, fmt.Errorf("expression %q: %w", s, err)
	}
	return preds, nil
}

type parser struct {
	toks   []token
	pos    int
	fields map[string]bool
}

func (p *parser) next() (token, bool) {
	if p.pos >= len(p.toks) {
		return token{}, false
	}
	t := p.toks[p.pos]
	p.pos++
	return t, true
}

func (p *parser) peek(kind string) bool {
	return p.pos < len(p.toks) && p.toks[p.pos].kind == kind
}

func (p *parser) conj() ([]predicate, error) {
	var out []predicate
	for {
		preds, err := p.atom()
		if err != nil {
			return nil, err
		}
		out = append(out, preds...)
		if !p.peek("and") {
			return out, nil
		}
		p.pos++
	}
}

func (p *parser) atom() ([]predicate, error) {
	if p.peek("(") {
		p.pos++
		preds, err := p.conj()
		if err != nil {
			return nil, err
		}
		if t, ok := p.next(); !ok || t.kind != ")" {
			return nil, fmt.Errorf("missing )")
		}
		return preds, nil
	}
	f, ok := p.next()
	if !ok || f.kind != "ident" {
		return nil, fmt.Errorf("expected a field name")
	}
	if !p.fields[f.text] {
		return nil, fmt.Errorf("unknown field %q", f.text)
	}
	op, ok := p.next()
	if !ok || op.kind != "op" {
		return nil, fmt.Errorf("expected an operator after %s", f.text)
	}
	pr := predicate{field: f.text, op: op.text}
	if op.text == "in" {
		if t, ok := p.next(); !ok || t.kind != "[" {
			return nil, fmt.Errorf("expected [ after in")
		}
		for {
			v, ok := p.next()
			if !ok || v.kind != "string" {
				return nil, fmt.Errorf("expected a string in the list")
			}
			pr.values = append(pr.values, v.text)
			t, ok := p.next()
			if ok && t.kind == "]" {
				break
			}
			if !ok || t.kind != "," {
				return nil, fmt.Errorf("expected , or ]")
			}
		}
		return []predicate{pr}, nil
	}
	v, ok := p.next()
	if !ok || v.kind != "string" {
		return nil, fmt.Errorf("expected a string after %s %s", f.text, op.text)
	}
	pr.values = []string{v.text}
	return []predicate{pr}, nil
}
