package logging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
)

// Formatter writes one line per entry, as logfmt text (the same shape as
// logrus's TextFormatter: time, level, msg, then the fields by name) or as
// one JSON object. It appends values of the common kinds directly instead
// of going through reflection, which makes it several times faster than
// logrus's own formatters on the service's hot path.
type Formatter struct {
	JSON bool
}

var keysPool = sync.Pool{New: func() any { s := make([]string, 0, 16); return &s }}

// Format renders e; see the type comment.
func (f *Formatter) Format(e *logrus.Entry) ([]byte, error) {
	b := e.Buffer
	if b == nil {
		b = &bytes.Buffer{}
	}
	kp := keysPool.Get().(*[]string)
	keys := (*kp)[:0]
	for k := range e.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	var scratch [64]byte
	ts := e.Time.UTC().AppendFormat(scratch[:0], time.RFC3339Nano)
	if f.JSON {
		b.WriteString(`{"time":"`)
		b.Write(ts)
		b.WriteString(`","level":"`)
		b.WriteString(e.Level.String())
		b.WriteString(`","msg":`)
		appendJSONString(b, e.Message)
		for _, k := range keys {
			b.WriteByte(',')
			appendJSONString(b, k)
			b.WriteByte(':')
			appendJSONValue(b, e.Data[k])
		}
		b.WriteString("}\n")
	} else {
		b.WriteString(`time="`)
		b.Write(ts)
		b.WriteString(`" level=`)
		b.WriteString(e.Level.String())
		b.WriteString(` msg=`)
		appendText(b, e.Message)
		for _, k := range keys {
			b.WriteByte(' ')
			b.WriteString(k)
			b.WriteByte('=')
			appendText(b, textValue(e.Data[k]))
		}
		b.WriteByte('\n')
	}
	*kp = keys
	keysPool.Put(kp)
	return b.Bytes(), nil
}

// textValue renders v for logfmt.
func textValue(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case error:
		return v.Error()
	case fmt.Stringer:
		return v.String()
	}
	return fmt.Sprint(v)
}

// appendText writes s bare when it is a simple token, else quoted.
func appendText(b *bytes.Buffer, s string) {
	if s == "" {
		b.WriteString(`""`)
		return
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= utf8.RuneSelf {
			b.Write(strconv.AppendQuote(b.AvailableBuffer(), s))
			return
		}
	}
	b.WriteString(s)
}

func appendJSONValue(b *bytes.Buffer, v any) {
	switch v := v.(type) {
	case string:
		appendJSONString(b, v)
	case int:
		b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(v), 10))
	case int64:
		b.Write(strconv.AppendInt(b.AvailableBuffer(), v, 10))
	case bool:
		b.Write(strconv.AppendBool(b.AvailableBuffer(), v))
	case error:
		appendJSONString(b, v.Error())
	case fmt.Stringer:
		appendJSONString(b, v.String())
	default:
		raw, err := json.Marshal(v)
		if err != nil {
			appendJSONString(b, fmt.Sprint(v))
			return
		}
		b.Write(raw)
	}
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b.WriteString(s[start:i])
			switch c {
			case '"', '\\':
				b.WriteByte('\\')
				b.WriteByte(c)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			case '\t':
				b.WriteString(`\t`)
			default:
				b.WriteString(`\u00`)
				b.WriteByte(hexDigits[c>>4])
				b.WriteByte(hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString(s[start:i])
			b.WriteString(`\ufffd`)
			i++
			start = i
			continue
		}
		i += size
	}
	b.WriteString(s[start:])
	b.WriteByte('"')
}
