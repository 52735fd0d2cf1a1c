// HeaderConformanceTests.cs: the binding against include/tessera.h itself: every function has
// a P/Invoke of matching shape, every status and constant has its C# twin with the same
// number, and the structs have the C compiler's sizes and offsets.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using NUnit.Framework;

namespace Tessera.Tests
{
    [TestFixture]
    public class HeaderConformanceTests
    {
        static string header;

        static string Header
        {
            get
            {
                if (header == null)
                    header = File.ReadAllText(Path.Combine(TestEnv.Root, "include", "tessera.h"));
                return header;
            }
        }

        static string WithoutComments(string c)
        {
            c = Regex.Replace(c, @"/\*.*?\*/", " ", RegexOptions.Singleline);
            return Regex.Replace(c, @"//[^\n]*", " ");
        }

        static string Pascal(string upper)
        {
            return string.Concat(upper.Split('_').Select(w => w.Substring(0, 1) + w.Substring(1).ToLowerInvariant()));
        }

        [Test]
        public void EveryStatusOfTheHeaderIsInTheStatusEnumWithItsNumber()
        {
            Match block = Regex.Match(Header, @"typedef enum tessera_status \{(.*?)\} tessera_status;", RegexOptions.Singleline);
            Assert.IsTrue(block.Success, "no tessera_status enum in tessera.h");
            var found = new List<string>();
            foreach (Match m in Regex.Matches(WithoutComments(block.Groups[1].Value), @"TESSERA_(?:E_)?(\w+)\s*=\s*(\d+)"))
            {
                string name = Pascal(m.Groups[1].Value);
                int number = int.Parse(m.Groups[2].Value);
                Assert.IsTrue(Enum.IsDefined(typeof(Status), name), "Status lacks " + name + " = " + number);
                Assert.AreEqual(number, (int)Enum.Parse(typeof(Status), name), "Status." + name);
                found.Add(name);
            }
            Assert.That(found.Count, Is.GreaterThanOrEqualTo(24));
            CollectionAssert.AreEquivalent(found, Enum.GetNames(typeof(Status)),
                                           "Status has members the header does not");
        }

        [Test]
        public void EveryStatusHasTheLibrarysWordsAndItsGroupsException()
        {
            foreach (Status s in Enum.GetValues(typeof(Status)))
            {
                string words = Library.Describe(s);
                Assert.AreNotEqual("unknown status", words, s.ToString());
                Assert.IsNotEmpty(words);
                if (s == Status.Ok) continue;
                TesseraException e = Errors.Create(s, "tessera_x", words, "detail");
                Assert.AreEqual(s, e.Status);
                Assert.AreEqual("detail", e.Detail);
                Assert.AreEqual("tessera_x", e.Call);
                StringAssert.Contains(words, e.Message);
                int n = (int)s;
                Type group = n < 100 ? typeof(UsageException)
                           : n < 200 ? typeof(LicensingException)
                           : n < 300 ? typeof(TransportException)
                           : typeof(InternalException);
                Assert.IsInstanceOf(group, e, s.ToString());
                Assert.AreNotEqual(group, e.GetType(), s + " should have a type of its own");
            }
            Assert.AreEqual("unknown status", Library.Describe((Status)5000));
        }

        [Test]
        public void EveryConstantOfTheHeaderHasItsTwin()
        {
            var enums = new Dictionary<string, Type>
            {
                { "SOURCE_", typeof(Sources) }, { "UNIT_", typeof(CountingUnit) },
                { "TRANSPORT_", typeof(Transport) }, { "CONTAINER_", typeof(ContainerKind) },
                { "CRYPT_", typeof(CryptMode) }, { "ACQUIRE_", typeof(AcquireFlags) },
                { "LICENSE_", typeof(LicenseFlags) }, { "SEAT_", typeof(SeatFlags) },
            };
            string[] version = Library.Version.Split('.');
            var singles = new Dictionary<string, long>
            {
                { "ABI_VERSION", Library.AbiVersion },
                { "CIPHERTEXT_OVERHEAD", Library.CiphertextOverhead },
                { "PUBLISHER_KEY_LEN", Library.PublisherKeyLength },
                { "SERIAL_MAX", Library.SerialMax },
                { "VERSION_MAJOR", long.Parse(version[0]) },
                { "VERSION_MINOR", long.Parse(version[1]) },
                { "VERSION_PATCH", long.Parse(version[2]) },
            };
            int count = 0;
            foreach (Match m in Regex.Matches(Header, @"^#define TESSERA_(\w+) (\S+)", RegexOptions.Multiline))
            {
                string name = m.Groups[1].Value, value = m.Groups[2].Value;
                count++;
                if (name == "VERSION_STRING")
                {
                    Assert.AreEqual(value.Trim('"'), Library.Version, "the loaded library is not the header's");
                    continue;
                }
                long number = long.Parse(value);
                if (singles.ContainsKey(name))
                {
                    Assert.AreEqual(number, singles[name], "TESSERA_" + name);
                    continue;
                }
                string prefix = enums.Keys.FirstOrDefault(p => name.StartsWith(p));
                Assert.IsNotNull(prefix, "the binding has no twin of TESSERA_" + name);
                Type t = enums[prefix];
                string member = Pascal(name.Substring(prefix.Length));
                Assert.IsTrue(Enum.IsDefined(t, member), t.Name + " lacks " + member + " (TESSERA_" + name + ")");
                Assert.AreEqual(number, Convert.ToInt64(Enum.Parse(t, member)), "TESSERA_" + name);
            }
            Assert.That(count, Is.GreaterThanOrEqualTo(26));
        }

        // What each C type of the header may be in a P/Invoke signature.
        static readonly Dictionary<string, Type[]> CTypes = new Dictionary<string, Type[]>
        {
            { "uint32_t", new[] { typeof(uint) } },
            { "int32_t", new[] { typeof(int) } },
            { "size_t", new[] { typeof(UIntPtr) } },
            { "tessera_session", new[] { typeof(SessionHandle), typeof(ulong) } },
            { "tessera_seat", new[] { typeof(SeatHandle), typeof(ulong) } },
            { "enum tessera_status", new[] { typeof(Status) } },
            { "const char *", new[] { typeof(IntPtr) } },
            { "const uint8_t *", new[] { typeof(byte[]), typeof(IntPtr) } },
            { "uint8_t *", new[] { typeof(byte[]), typeof(IntPtr) } },
            { "size_t *", new[] { typeof(UIntPtr).MakeByRefType() } },
            { "uint64_t *", new[] { typeof(ulong).MakeByRefType() } },
            { "tessera_session *", new[] { typeof(SessionHandle).MakeByRefType() } },
            { "tessera_seat *", new[] { typeof(SeatHandle).MakeByRefType() } },
            { "struct tessera_open_options *", new[] { typeof(IntPtr), typeof(OpenOptionsNative).MakeByRefType() } },
            { "const struct tessera_open_options *", new[] { typeof(OpenOptionsNative).MakeByRefType() } },
            { "struct tessera_seat_details *", new[] { typeof(SeatDetailsNative).MakeByRefType() } },
            { "struct tessera_license_info *", new[] { typeof(LicenseInfoNative[]), typeof(IntPtr) } },
        };

        static string CType(string decl, string name)
        {
            // "const uint8_t *input" -> "const uint8_t *"; "uint32_t flags" -> "uint32_t"
            string t = decl.Trim();
            if (name != null && t.EndsWith(name)) t = t.Substring(0, t.Length - name.Length);
            return Regex.Replace(t.Trim(), @"\s*\*", " *").Trim();
        }

        [Test]
        public void EveryFunctionOfTheHeaderHasAPInvokeOfTheSameShape()
        {
            var pinvokes = typeof(NativeMethods)
                .GetMethods(BindingFlags.Static | BindingFlags.NonPublic | BindingFlags.Public)
                .Where(m => (m.Attributes & MethodAttributes.PinvokeImpl) != 0)
                .ToDictionary(m => m.Name);
            var seen = new List<string>();
            string code = Regex.Replace(WithoutComments(Header), @"\s+", " ");
            foreach (Match m in Regex.Matches(code, @"((?:const |enum |struct )*\w+ ?\*?) ?\b(tessera_\w+)\(([^)]*)\);"))
            {
                string fn = m.Groups[2].Value;
                seen.Add(fn);
                Assert.IsTrue(pinvokes.ContainsKey(fn), "no P/Invoke for " + fn);
                MethodInfo mi = pinvokes[fn];

                var dll = (DllImportAttribute)mi.GetCustomAttributes(typeof(DllImportAttribute), false).Single();
                Assert.AreEqual("tessera", dll.Value, fn);
                Assert.AreEqual(CallingConvention.Cdecl, dll.CallingConvention, fn);

                string ret = CType(m.Groups[1].Value, null);
                Assert.IsTrue(CTypes.ContainsKey(ret), fn + ": unmapped return type " + ret);
                CollectionAssert.Contains(CTypes[ret], mi.ReturnType, fn + " returns " + ret);

                string ps = m.Groups[3].Value.Trim();
                string[] cparams = ps == "void" ? new string[0] : ps.Split(',');
                ParameterInfo[] mparams = mi.GetParameters();
                Assert.AreEqual(cparams.Length, mparams.Length, fn + ": parameter count");
                for (int i = 0; i < cparams.Length; i++)
                {
                    string cname = Regex.Match(cparams[i].Trim(), @"(\w+)$").Groups[1].Value;
                    string ct = CType(cparams[i], cname);
                    Assert.IsTrue(CTypes.ContainsKey(ct), fn + ": unmapped parameter type " + ct);
                    CollectionAssert.Contains(CTypes[ct], mparams[i].ParameterType,
                                              fn + " parameter " + cname + " (" + ct + ")");
                    Assert.AreEqual(cname, mparams[i].Name, fn + " parameter " + i);
                }
            }
            Assert.That(seen.Count, Is.GreaterThanOrEqualTo(16));
            CollectionAssert.AreEquivalent(seen, pinvokes.Keys, "P/Invokes of functions the header does not have");
        }

        const string Probe = @"
#include <stddef.h>
#include <stdio.h>
#include ""tessera.h""
#define S(T) printf(""%s %zu\n"", #T, sizeof(T))
#define F(T, f) printf(""%s.%s %zu\n"", #T, #f, offsetof(T, f))
int main(void) {
    S(tessera_open_options);
    F(tessera_open_options, struct_size); F(tessera_open_options, vendor_id);
    F(tessera_open_options, publisher_key); F(tessera_open_options, publisher_key_len);
    F(tessera_open_options, sources); F(tessera_open_options, timeout_ms);
    F(tessera_open_options, servers);
    S(tessera_seat_details);
    F(tessera_seat_details, struct_size); F(tessera_seat_details, vendor_id);
    F(tessera_seat_details, product_code); F(tessera_seat_details, features);
    F(tessera_seat_details, quantity); F(tessera_seat_details, seats_in_use);
    F(tessera_seat_details, expiry); F(tessera_seat_details, source);
    F(tessera_seat_details, counting_unit); F(tessera_seat_details, container_kind);
    F(tessera_seat_details, flags); F(tessera_seat_details, container_serial);
    F(tessera_seat_details, transport); F(tessera_seat_details, server);
    S(tessera_license_info);
    F(tessera_license_info, struct_size); F(tessera_license_info, vendor_id);
    F(tessera_license_info, product_code); F(tessera_license_info, features);
    F(tessera_license_info, quantity); F(tessera_license_info, seats_in_use);
    F(tessera_license_info, expiry); F(tessera_license_info, source);
    F(tessera_license_info, counting_unit); F(tessera_license_info, container_kind);
    F(tessera_license_info, flags); F(tessera_license_info, status);
    F(tessera_license_info, transport); F(tessera_license_info, container_serial);
    F(tessera_license_info, server); F(tessera_license_info, borrowed_until);
    S(tessera_session); S(tessera_seat); S(tessera_status);
    return 0;
}
";

        [Test]
        public void StructsHaveTheCCompilersSizesAndOffsets()
        {
            string dir = TestEnv.TempDir();
            try
            {
                File.WriteAllText(Path.Combine(dir, "probe.c"), Probe);
                string exe = Path.Combine(dir, "probe");
                ProcessResult cc = TestEnv.Run("cc", string.Format("-std=c11 -Wall -Wextra -Werror -I\"{0}\" \"{1}\" -o \"{2}\"",
                    Path.Combine(TestEnv.Root, "include"), Path.Combine(dir, "probe.c"), exe));
                Assert.AreEqual(0, cc.ExitCode, "compiling the layout probe: " + cc);
                ProcessResult r = TestEnv.Run(exe, "");
                Assert.AreEqual(0, r.ExitCode, r.ToString());

                var types = Structs;
                var clr = new Dictionary<string, int>
                {
                    { "tessera_session", sizeof(ulong) }, { "tessera_seat", sizeof(ulong) },
                    { "tessera_status", sizeof(int) },
                };
                var fieldsChecked = new Dictionary<Type, int>();
                int lines = 0;
                foreach (string line in r.Stdout.Split(new[] { '\n' }, StringSplitOptions.RemoveEmptyEntries))
                {
                    lines++;
                    string[] parts = line.Split(' ');
                    long expected = long.Parse(parts[1]);
                    string[] name = parts[0].Split('.');
                    if (clr.ContainsKey(name[0]))
                    {
                        Assert.AreEqual(expected, clr[name[0]], "sizeof " + name[0]);
                        continue;
                    }
                    Type t = types[name[0]];
                    if (name.Length == 1)
                    {
                        Assert.AreEqual(expected, Marshal.SizeOf(t), "sizeof " + name[0]);
                        Assert.AreEqual(expected, SizeOfUnmarshalled(t), "sizeof " + name[0] + " (blittable)");
                    }
                    else
                    {
                        Assert.AreEqual(expected, Marshal.OffsetOf(t, name[1]).ToInt64(), "offsetof " + parts[0]);
                        fieldsChecked[t] = (fieldsChecked.ContainsKey(t) ? fieldsChecked[t] : 0) + 1;
                    }
                }
                Assert.AreEqual(43, lines, r.Stdout);
                foreach (var t in types.Values)
                    Assert.AreEqual(t.GetFields(BindingFlags.Instance | BindingFlags.Public).Length, fieldsChecked[t],
                                    t.Name + ": every field is checked");
            }
            finally
            {
                Directory.Delete(dir, true);
            }
        }

        static readonly Dictionary<string, Type> Structs = new Dictionary<string, Type>
        {
            { "tessera_open_options", typeof(OpenOptionsNative) },
            { "tessera_seat_details", typeof(SeatDetailsNative) },
            { "tessera_license_info", typeof(LicenseInfoNative) },
        };

        [Test]
        public void EveryStructOfTheHeaderHasItsTwinWithTheSameFieldsInOrder()
        {
            string code = WithoutComments(Header);
            var found = new List<string>();
            foreach (Match m in Regex.Matches(code, @"typedef struct (\w+) \{(.*?)\} \w+;", RegexOptions.Singleline))
            {
                string name = m.Groups[1].Value;
                found.Add(name);
                Assert.IsTrue(Structs.ContainsKey(name), "the binding has no twin of struct " + name);
                var cfields = Regex.Matches(m.Groups[2].Value, @"(\w+)\s*(?:\[\w+\])?\s*;")
                    .Cast<Match>().Select(f => f.Groups[1].Value).ToList();
                var fields = Structs[name].GetFields(BindingFlags.Instance | BindingFlags.Public)
                    .OrderBy(f => Marshal.OffsetOf(Structs[name], f.Name).ToInt64())
                    .Select(f => f.Name).ToList();
                CollectionAssert.AreEqual(cfields, fields, name + ": fields and their order");
            }
            CollectionAssert.AreEquivalent(Structs.Keys, found, "twins of structs the header does not have");
        }

        static unsafe int SizeOfUnmarshalled(Type t)
        {
            if (t == typeof(OpenOptionsNative)) return sizeof(OpenOptionsNative);
            if (t == typeof(LicenseInfoNative)) return sizeof(LicenseInfoNative);
            return sizeof(SeatDetailsNative);
        }
    }
}
