package acme

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger returns the *zap.Logger certmagic wants, writing to h.
//
// certmagic logs routine steps (locks, rate limiter, account in use) at
// info level, so its info becomes slog debug. The lines an operator needs,
// obtained, renewed and failed, come from certmagic's events (see onEvent)
// with stable messages; the matching zap lines are demoted so each fact is
// logged once.
//
// Once muted is set, nothing more is written: certmagic's jobs are
// cancelled by Stop but not waited for, and their last words belong to a
// Manager that no longer exists.
//
// onChallenge, if set, hears of every ACME challenge tried and failed, by
// type: acmez says which challenge it tries only in these log lines.
func newZapLogger(h slog.Handler, muted *atomic.Bool, onChallenge func(typ string, failed bool)) *zap.Logger {
	return zap.New(&zapCore{h: h, muted: muted, onChallenge: onChallenge})
}

// challengeMessages are acmez's lines for a challenge tried and failed.
var challengeMessages = map[string]bool{
	"trying to solve challenge": false,
	"challenge failed":          true,
}

// zapLevels overrides the level of certmagic messages by their text.
var zapLevels = map[string]slog.Level{
	// Logged by onEvent as "certificate obtained" / "certificate renewed".
	"certificate obtained successfully": slog.LevelDebug,
	"certificate renewed successfully":  slog.LevelDebug,
	// One issuer failing is not the end: the next one is tried, and the
	// attempt's failure is logged by onEvent.
	"could not get certificate from issuer": slog.LevelWarn,
	// Says when the next attempt comes; the failure itself is logged by
	// onEvent at error level.
	"will retry": slog.LevelInfo,
}

// zapFieldNames renames certmagic's keys to signpost's.
var zapFieldNames = map[string]string{
	"identifier": "name",
	"subject":    "name",
}

type zapCore struct {
	h           slog.Handler
	muted       *atomic.Bool
	onChallenge func(typ string, failed bool)
	fields      []zapcore.Field
}

func slogLevel(ent zapcore.Entry) slog.Level {
	if l, ok := zapLevels[ent.Message]; ok {
		return l
	}
	switch {
	case ent.Level >= zapcore.ErrorLevel:
		return slog.LevelError
	case ent.Level == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelDebug
	}
}

// Enabled is asked before the message is known, so it answers for the
// lowest level the message could be mapped to.
func (c *zapCore) Enabled(l zapcore.Level) bool {
	if c.onChallenge != nil && l >= zapcore.InfoLevel {
		return true // maybe a challenge line
	}
	lowest := slog.LevelDebug
	if l >= zapcore.WarnLevel {
		lowest = slog.LevelInfo
	}
	return c.h.Enabled(context.Background(), lowest)
}

func (c *zapCore) With(fields []zapcore.Field) zapcore.Core {
	return &zapCore{h: c.h, muted: c.muted, onChallenge: c.onChallenge, fields: append(slices.Clip(c.fields), fields...)}
}

func (c *zapCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.muted.Load() {
		return ce
	}
	if _, ok := challengeMessages[ent.Message]; (ok && c.onChallenge != nil) || c.h.Enabled(context.Background(), slogLevel(ent)) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *zapCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	if failed, ok := challengeMessages[ent.Message]; ok && c.onChallenge != nil {
		typ, _ := enc.Fields["challenge_type"].(string)
		c.onChallenge(typ, failed)
	}
	if !c.h.Enabled(context.Background(), slogLevel(ent)) {
		return nil
	}
	r := slog.NewRecord(ent.Time, slogLevel(ent), ent.Message, 0)
	if ent.LoggerName != "" {
		r.AddAttrs(slog.String("component", ent.LoggerName))
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		if d, ok := v.(time.Duration); ok {
			v = d.Seconds() // signpost logs durations in seconds
		}
		attrs = append(attrs, slog.Any(cmpOr(zapFieldNames[k], k), v))
	}
	slices.SortFunc(attrs, func(a, b slog.Attr) int { return strings.Compare(a.Key, b.Key) })
	r.AddAttrs(attrs...)
	return c.h.Handle(context.Background(), r)
}

func (c *zapCore) Sync() error { return nil }
