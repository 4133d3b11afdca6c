// The outbound URL policy: URL parsing, address classes, and which hosts
// and resolved addresses pass.
#include "common/uri_policy.h"

#include <gtest/gtest.h>

namespace lathe {
namespace {

TEST(UriPolicyTest, ParsesHttpUrls) {
  auto u = ParseHttpUrl("HTTPS://Hooks.Example.COM:8443/a/b?sig=x#frag", "f");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->scheme, "https");
  EXPECT_EQ(u->host, "hooks.example.com");
  EXPECT_EQ(u->port, 8443);
  EXPECT_EQ(u->target, "/a/b?sig=x");
  EXPECT_EQ(u->Display(), "https://hooks.example.com:8443/a/b");
  auto v6 = ParseHttpUrl("http://[::1]/x", "f");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 80);
  EXPECT_EQ(v6->Display(), "http://[::1]/x");
  EXPECT_EQ(ParseHttpUrl("http://h", "f")->target, "/");
  EXPECT_EQ(ParseHttpUrl("http://h?q=1", "f")->target, "/?q=1");
  for (const char* bad : {"ftp://h/", "http://", "http://u:p@h/", "http://h:0/",
                          "http://h:70000/", "http://h:x/", "http://h /",
                          "http://[::1/", "http://[zz]/", "h/x"}) {
    auto r = ParseHttpUrl(bad, "spec.webhooks[2]");
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().message().substr(0, 17), "spec.webhooks[2]:") << bad;
  }
  EXPECT_FALSE(ParseHttpUrl("http://h/" + std::string(2100, 'a'), "f").ok());
}

TEST(UriPolicyTest, ClassifiesSpecialAddresses) {
  EXPECT_EQ(ClassifyAddress("127.0.0.1"), AddressClass::kLoopback);
  EXPECT_EQ(ClassifyAddress("127.8.9.10"), AddressClass::kLoopback);
  EXPECT_EQ(ClassifyAddress("::1"), AddressClass::kLoopback);
  EXPECT_EQ(ClassifyAddress("::ffff:127.0.0.1"), AddressClass::kLoopback);
  EXPECT_EQ(ClassifyAddress("169.254.169.254"), AddressClass::kMetadata);
  EXPECT_EQ(ClassifyAddress("fd00:ec2::254"), AddressClass::kMetadata);
  EXPECT_EQ(ClassifyAddress("100.100.100.200"), AddressClass::kMetadata);
  EXPECT_EQ(ClassifyAddress("169.254.1.2"), AddressClass::kLinkLocal);
  EXPECT_EQ(ClassifyAddress("fe80::1"), AddressClass::kLinkLocal);
  EXPECT_EQ(ClassifyAddress("0.0.0.0"), AddressClass::kUnspecified);
  EXPECT_EQ(ClassifyAddress("::"), AddressClass::kUnspecified);
  EXPECT_EQ(ClassifyAddress("93.184.216.34"), AddressClass::kPublic);
  EXPECT_EQ(ClassifyAddress("10.1.2.3"), AddressClass::kPublic);
  EXPECT_EQ(ClassifyAddress("2001:db8::1"), AddressClass::kPublic);
}

TEST(UriPolicyTest, OnlyNamedHostsPass) {
  const UriPolicy none;
  EXPECT_TRUE(absl::IsPermissionDenied(
      none.Check(*ParseHttpUrl("https://a.example/", "f"), "f")));
  const UriPolicy p({"hooks.example", "*.corp.example", "127.0.0.1"});
  auto ok = [&](const std::string& url) {
    return p.Check(*ParseHttpUrl(url, "f"), "f").ok();
  };
  EXPECT_TRUE(ok("https://hooks.example/x"));
  EXPECT_TRUE(ok("https://ci.corp.example/x"));
  EXPECT_TRUE(ok("http://127.0.0.1:9/x"));
  EXPECT_FALSE(ok("https://corp.example/x"));  // the pattern's own domain
  EXPECT_FALSE(ok("https://evilhooks.example/x"));
  EXPECT_FALSE(ok("http://127.0.0.2/x"));
  EXPECT_FALSE(ok("http://localhost/x"));
  EXPECT_FALSE(ok("http://169.254.169.254/x"));
  auto denied = p.Check(*ParseHttpUrl("http://localhost/x", "f"), "f");
  EXPECT_EQ(denied.message(),
            "f: host localhost is not allowed (lathe-server --allow-uri-host)");
}

TEST(UriPolicyTest, ResolvedAddressesAreChecked) {
  // A literal named exactly may be special; a name resolving to loopback is
  // refused unless the name itself is listed.
  const UriPolicy literal({"127.0.0.1"});
  auto ip = literal.Resolve(*ParseHttpUrl("http://127.0.0.1:8080/", "f"), "f");
  ASSERT_TRUE(ip.ok()) << ip.status();
  EXPECT_EQ(*ip, "127.0.0.1");
  const UriPolicy named({"localhost"});
  auto local = named.Resolve(*ParseHttpUrl("http://localhost/", "f"), "f");
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(ClassifyAddress(*local), AddressClass::kLoopback);
  const UriPolicy pattern({"*.localhost"});
  auto sub = pattern.Resolve(*ParseHttpUrl("http://x.localhost/", "f"), "f");
  // glibc resolves *.localhost to loopback (or not at all): never allowed.
  EXPECT_FALSE(sub.ok());
  const UriPolicy meta({"169.254.169.254"});
  EXPECT_TRUE(
      meta.Resolve(*ParseHttpUrl("http://169.254.169.254/", "f"), "f").ok());
}

}  // namespace
}  // namespace lathe
