// AssemblyInfo.cs: assembly identity (build.sh adds the version from Cargo.toml); the tests
// may reach the P/Invoke layer.
using System.Reflection;
using System.Runtime.CompilerServices;

[assembly: AssemblyTitle("Tessera")]
[assembly: AssemblyDescription("C# binding of libtessera, the Tessera licensing runtime")]
[assembly: InternalsVisibleTo("Tessera.Tests")]
