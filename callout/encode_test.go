package callout

import (
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// encodeJWT must write exactly the token the jwt package's Encode writes (Ed25519 signatures
// are deterministic): same header, claims, jti and signature.
func TestEncodeJWTMatchesTheJWTPackage(t *testing.T) {
	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := account.PublicKey()
	held, err := newSigner(account, pub)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	server, _ := nkeys.CreateServer()
	serverPub, _ := server.PublicKey()

	newUser := func() *jwt.UserClaims {
		uc := jwt.NewUserClaims(userPub)
		uc.Name = "system:serviceaccount:shop:api"
		uc.Audience = "APP"
		uc.Tags.Add("namespace:shop", "serviceaccount:api")
		uc.Expires = 1893456000
		uc.Pub.Allow = jwt.StringList{"shop.>", "a<b>&\"quoted\"", "ü"}
		uc.Sub.Deny = jwt.StringList{">"}
		uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1}
		return uc
	}
	newResponse := func(userJWT, denial string) *jwt.AuthorizationResponseClaims {
		rc := jwt.NewAuthorizationResponseClaims(userPub)
		rc.Audience = serverPub
		rc.Jwt, rc.Error = userJWT, denial
		return rc
	}
	for _, kp := range []nkeys.KeyPair{held, account} {
		for attempt := 0; ; attempt++ {
			// The issue time is the current second: retry if it changed between the two.
			uc := newUser()
			ours, err := encodeJWT(&uc.ClaimsData, &uc.GenericFields, jwt.UserClaim, uc, kp)
			if err != nil {
				t.Fatal(err)
			}
			theirs, err := newUser().Encode(kp)
			if err != nil {
				t.Fatal(err)
			}
			rc := newResponse(string(ours), "")
			oursResp, err := encodeJWT(&rc.ClaimsData, &rc.GenericFields, jwt.AuthorizationResponseClaim, rc, kp)
			if err != nil {
				t.Fatal(err)
			}
			theirsResp, err := newResponse(string(ours), "").Encode(kp)
			if err != nil {
				t.Fatal(err)
			}
			rc = newResponse("", "bad_signature")
			oursDenial, _ := encodeJWT(&rc.ClaimsData, &rc.GenericFields, jwt.AuthorizationResponseClaim, rc, kp)
			theirsDenial, _ := newResponse("", "bad_signature").Encode(kp)
			if string(ours) == theirs && string(oursResp) == theirsResp && string(oursDenial) == theirsDenial {
				decoded, err := jwt.DecodeUserClaims(string(ours))
				if err != nil || decoded.Name != "system:serviceaccount:shop:api" || decoded.Issuer != pub {
					t.Fatalf("decoded %+v, %v", decoded, err)
				}
				break
			}
			if attempt == 3 {
				t.Fatalf("encodings differ:\nours   %s\ntheirs %s\nours   %s\ntheirs %s", ours, theirs, oursResp, theirsResp)
			}
		}
	}

	// A key that is not an account key, or no subject, is refused as the jwt package refuses it.
	uc := newUser()
	if _, err := encodeJWT(&uc.ClaimsData, &uc.GenericFields, jwt.UserClaim, uc, server); err == nil || !strings.Contains(err.Error(), "prefixes") {
		t.Errorf("server key: %v, want a refusal", err)
	}
	uc.Subject = ""
	if _, err := encodeJWT(&uc.ClaimsData, &uc.GenericFields, jwt.UserClaim, uc, held); err == nil {
		t.Error("no subject: encoded")
	}
}
